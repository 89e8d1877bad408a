"""Whether a feature table fits a model's signature: the rules every caller shares."""

from __future__ import annotations

from services.predictor.fit import fit_problems, unused_columns
from services.predictor.scorer import InputColumn

TABLE = {"id": "string", "f1": "double", "is_red": "double", "code_9E": "double"}


def test_a_fitting_table_has_no_problem_and_safe_widenings_pass() -> None:
    inputs = [InputColumn("f1", "double"), InputColumn("is_red", None)]
    assert fit_problems(inputs, TABLE) == []
    assert fit_problems([InputColumn("n", "bigint")], {"n": "int"}) == []
    assert fit_problems([InputColumn("x", "double")], {"x": "decimal(10,2)"}) == []


def test_a_case_difference_is_named_with_did_you_mean() -> None:
    inputs = [InputColumn("F1", "double"), InputColumn("code_9e", "double")]
    assert fit_problems(inputs, TABLE) == [
        "the model's input F1 is not a feature column (did you mean f1? only the case differs)",
        "the model's input code_9e is not a feature column "
        "(did you mean code_9E? only the case differs)",
    ]


def test_a_missing_input_an_optional_one_and_an_unsafe_type() -> None:
    inputs = [
        InputColumn("f2", "double"),
        InputColumn("note", "string", required=False),
        InputColumn("is_red", "float"),  # a double does not narrow safely to a float
    ]
    assert fit_problems(inputs, TABLE) == [
        "the model's input f2 is not a feature column",
        "column is_red is double but the model expects float",
    ]


def test_a_case_match_taken_by_another_input_is_no_hint() -> None:
    # f1 is the model's own input too: F1 cannot mean it.
    inputs = [InputColumn("f1", "double"), InputColumn("F1", "double")]
    assert fit_problems(inputs, TABLE) == ["the model's input F1 is not a feature column"]


def test_unused_columns_leave_out_the_id() -> None:
    inputs = [InputColumn("f1", "double")]
    assert unused_columns(inputs, TABLE, "id") == ["is_red", "code_9E"]
