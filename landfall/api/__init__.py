"""The job API and status page (FastAPI), served by ``landfall serve api``.

Endpoints (the OpenAPI description is at ``/openapi.json``, a browsable one at ``/docs``):

- ``POST /batch/predict``: submit a batch run (dataset, partition, optional lake path,
  format and model version). Publishes data-landed and answers 202 with the batch id and
  the run id. The *job id* is the run id: one submission, one run.
- ``GET /batch/{job_id}``: one run's status per stage, figures, errors and links. A batch
  id is accepted too and answers with the batch's latest run (and all its runs).
- ``GET /batch/metrics``: batches and runs by status, rows, error rates, durations.
- ``GET /batches?dataset=&from=&to=&status=&limit=&offset=``: batch history, paged,
  newest first; ``from``/``to`` bound the partition date, inclusive.
- ``GET /``: an HTML status page of recent batches with their reports.
- ``GET /reports/{dataset}/{partition}/report.html`` (and ``report.json``).
- ``GET /dead-letters``: the newest dead letters with reason, source and a preview.
- ``POST /console/backfill|rerun|redrive``: the operator's console (browser forms).
- ``GET /login``, ``POST /login``, ``POST /logout``: a browser's session; ``GET /healthz``.

Every endpoint but the OpenAPI description, ``/docs``, the login and ``/healthz``
needs a bearer token (:mod:`.auth`): an operator token to submit, any token to read
(none with ``api.public_reads``). The status page and the reports ask a browser for the
token once, then a session cookie carries it (an operator's also posts the console's
forms, with the session's CSRF token).

Everything read comes from the results database, which the reporter writes; the API
itself writes only the submission of a run, so ``GET /batch/{run_id}`` answers at once.

Where things are: :mod:`.app` builds the app (routers, state, the lifespan that owns
the Kafka producer) and serves it; one router per concern, :mod:`.runs` (submit,
follow, history, figures), :mod:`.reports`, :mod:`.pages` (the status page),
:mod:`.console` (its forms), :mod:`.dead_letters`, :mod:`.session` (browser login)
and :mod:`.meta` (health, docs); :mod:`.deps` the dependencies routes ask for;
:mod:`.publisher` the seam submissions publish through; :mod:`.guard` the request
limits and security headers; :mod:`.errors` what errors say; :mod:`.forms` reads
posted forms. The HTML comes from the Jinja2 templates in ``landfall/templates/``
(:mod:`landfall.rendering`).
"""

from landfall.api.app import create_app, serve_api
from landfall.api.models import PredictAccepted, PredictRequest
from landfall.api.publisher import Publisher

__all__ = ["PredictAccepted", "PredictRequest", "Publisher", "create_app", "serve_api"]
