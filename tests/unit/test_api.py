import unetkit


def test_public_api_is_curated_and_complete():
    assert sorted(unetkit.__all__) == sorted(set(unetkit.__all__))
    for name in unetkit.__all__:
        assert hasattr(unetkit, name), name
    public = {n for n in dir(unetkit) if not n.startswith("_")}
    # subpackages are reachable, but everything else exported at the top is listed in __all__
    modules = {
        "cli",
        "config",
        "data",
        "device",
        "errors",
        "inference",
        "losses",
        "metrics",
        "models",
        "training",
        "viz",
        "checkpoint",
        "atomic",
        "extras",
        "memory",
        "planning",
        "pretrained",
        "safety",
        "version",
        "workflows",
    }
    assert public - modules <= set(unetkit.__all__)


def test_the_issue_names_import():
    from unetkit import UNet, evaluate, predict, train  # noqa: F401
