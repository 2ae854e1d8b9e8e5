"""Fuzzing the scenario loader: every input is a valid scenario or a meobench error, never a traceback."""

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meobench.cases import count_cases
from meobench.errors import MeobenchError
from meobench.scenario import LayerOptions, MeasureOptions, Scenario, Sweep, dump_scenario, parse_scenario

SHIPPED = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))
SHIPPED_TEXTS = [path.read_text() for path in SHIPPED]
KEYS = sorted({*Scenario.model_fields, *Sweep.model_fields, *LayerOptions.model_fields, *MeasureOptions.model_fields})
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["dense", "moe-token", "meo-token", "loop", "gemm", "cpu", "cuda", "float16", "auto", "train"])
)
keys = st.sampled_from(KEYS) | st.text(max_size=8)
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=20,
)


def check(text: str) -> None:
    """Parse ``text``; a valid scenario must also count its cases and survive a round trip."""
    try:
        scenario = parse_scenario(text, source="fuzz.yaml")
    except MeobenchError as error:
        assert str(error).startswith("fuzz.yaml")
        return
    assert count_cases(scenario, device="cpu") >= 1
    assert parse_scenario(yaml.safe_dump(dump_scenario(scenario))) == scenario


@FUZZ
@given(documents)
def test_random_documents(document):
    check(yaml.safe_dump(document))


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_random_text(text):
    check(text)


@FUZZ
@given(st.sampled_from(SHIPPED_TEXTS), st.data())
def test_text_mutations_of_shipped_scenarios(text, data):
    """Delete, insert or replace a span of characters at a random place."""
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 20)))
    insert = data.draw(st.text(alphabet=":-[]{}, #&*!|>'\"\n\t0123456789abcdefxyz", max_size=10))
    check(text[:start] + insert + text[end:])


@FUZZ
@given(st.sampled_from(SHIPPED_TEXTS), st.data())
def test_value_mutations_of_shipped_scenarios(text, data):
    """Replace, delete or rename one key of a shipped scenario, at any depth."""
    document = yaml.safe_load(text)
    parent = document
    while True:
        key = data.draw(st.sampled_from(sorted(parent)))
        if isinstance(parent[key], dict) and data.draw(st.booleans()):
            parent = parent[key]
            continue
        break
    action = data.draw(st.sampled_from(["replace", "delete", "rename"]))
    if action == "replace":
        parent[key] = data.draw(documents)
    elif action == "delete":
        del parent[key]
    else:
        parent[data.draw(keys)] = parent.pop(key)
    check(yaml.safe_dump(document))
