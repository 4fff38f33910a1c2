"""The public API is exactly sipflow.__all__, and every name in it exists (httpx style)."""

import sipflow


def test_all_exports_exist() -> None:
    for name in sipflow.__all__:
        assert hasattr(sipflow, name), name


def test_no_public_names_outside_all() -> None:
    public = {n for n in dir(sipflow) if not n.startswith("_")}
    # Sub-packages imported as a side effect of loading the public API are not exports.
    modules = {n for n in public if type(getattr(sipflow, n)).__name__ == "module"}
    assert public - modules == set(sipflow.__all__) - {"__version__"}
