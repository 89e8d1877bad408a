"""Build hook: the wheel carries the repository's ``schemas/`` as ``landfall/schemas``.

The Avro contracts live at the repository root, beside the services that share them and
where people edit them; pyproject.toml cannot map a folder outside the package into it,
so this copies them in while the wheel is built. ``landfall.contracts.SCHEMA_DIR`` finds
them there in an installed landfall, and at the root in a checkout or editable install.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SCHEMAS = Path(__file__).resolve().parent / "schemas"


class BuildPyWithSchemas(build_py):
    def run(self) -> None:
        super().run()
        # An editable install reads schemas/ where it is; copying would leave a stale twin.
        if getattr(self, "editable_mode", False):
            return
        files = sorted(SCHEMAS.rglob("*.avsc"))
        if not files:
            raise SystemExit(
                f"no Avro schemas under {SCHEMAS}: a wheel without them decodes nothing"
            )
        target = Path(self.build_lib) / "landfall" / "schemas"
        for path in files:
            dest = target / path.relative_to(SCHEMAS)
            self.mkpath(str(dest.parent))
            self.copy_file(str(path), str(dest))


setup(cmdclass={"build_py": BuildPyWithSchemas})
