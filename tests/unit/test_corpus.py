"""A generated corpus of damaged and deceptive inputs, run through the commands that read them: each is refused
with one line (exit 2) naming the file, and every input is byte-identical afterwards (issue 17, part).
Property-based fuzzing of the image reader and the YAML loader runs with a fixed budget."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unetkit import read_image
from unetkit.config import read_yaml
from unetkit.errors import UnetkitError


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=600), suffix=st.sampled_from([".png", ".tif", ".npy", ".jpg"]))
def test_fuzzed_image_bytes_are_read_or_refused_never_crash(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        arr = read_image(path)
    except UnetkitError:
        return
    assert arr.ndim in (2, 3)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_fuzzed_yaml_is_parsed_or_refused_never_crash(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        read_yaml(path, "--config")
    except UnetkitError:
        pass


@settings(max_examples=80, deadline=None)
@given(
    raw=st.dictionaries(
        st.sampled_from(["model", "data", "train", "extra"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=10),
            st.dictionaries(
                st.sampled_from(["depth", "patch_size", "lr", "epochs", "mask_encoding", "layout", "nonsense"]),
                st.one_of(st.none(), st.integers(-5, 10**9), st.floats(allow_nan=True), st.text(max_size=8),
                          st.lists(st.integers(), max_size=3)),
                max_size=4,
            ),
        ),
        max_size=4,
    )
)  # fmt: skip
def test_fuzzed_configurations_are_accepted_or_refused_by_name(raw):
    from unetkit.config import RunConfig, check_config

    try:
        check_config(RunConfig.from_dict(raw, source="fuzz.yaml"))
    except UnetkitError as exc:
        assert str(exc)  # a message, never a crash of another kind
