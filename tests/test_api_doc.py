"""docs/api.md stays in sync with the code: every public function and layer of paddle_te,
paddle_te.ops and paddle_te.nn is documented there with its current signature (and each layer
with its forward's)."""
import inspect
import pathlib
import re

import paddle_te

API_MD = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _normalize(text):
    """Signature text without spaces, line breaks or quote style."""
    return re.sub(r"\s+", "", text).replace("'", '"')


def _public_callables():
    for mod in (paddle_te, paddle_te.ops, paddle_te.nn):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj) and not inspect.ismodule(obj):
                yield name, obj


def _signature(name, fn, drop_self=False):
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if drop_self:
        params = params[1:]
    return _normalize(f"{name}{sig.replace(parameters=params, return_annotation=sig.empty)}")


def test_every_public_callable_is_documented_with_its_signature():
    doc = _normalize(API_MD.read_text(encoding="utf-8"))
    missing = []
    for name, obj in _public_callables():
        if _signature(name, obj) not in doc:
            missing.append(_signature(name, obj))
        if inspect.isclass(obj) and "forward" in vars(obj):
            fwd = _signature(f"{name}.forward", obj.forward, drop_self=True)
            if fwd not in doc:
                missing.append(fwd)
    assert not missing, "docs/api.md lacks (or has stale) signatures:\n" + "\n".join(missing)


def test_version_is_documented():
    assert f'`"{paddle_te.__version__}"`' in API_MD.read_text(encoding="utf-8")
