"""pcs_arrays: NumPy arrays and scalars, pandas DataFrames/Series/Indexes and PyTorch
tensors, encoded exactly (never pickled) so equal content hashes equal in any process.

A first-party pcs plugin, installed with pcs and registered through the
``pcs`` entry-point group under the name ``arrays`` (disable it with
``PCS_DISABLE_PLUGINS=arrays``). It implements ``pcs_register_encoders``
and registers its types **by name**, so it never imports NumPy, pandas or
PyTorch: a library is used only once your program has imported it.

The byte layout (extension version 1) is documented in :doc:`/plugins`:

``numpy.ndarray``
    ``{"dtype": dtype.str, "shape": [...], "sha256": hex, "data": bytes}``:
    the elements in C order, little-endian (``"<f8"``, ``"|b1"``,
    ``"<M8[ns]"``...), and the SHA-256 of those bytes. Arrays of Python
    objects (dtype ``object``) keep ``"items"``, the elements in C order,
    each encoded by pcs, instead of ``"data"``. Structured dtypes are not
    encoded (a placeholder says so).
``numpy.scalar``
    ``{"dtype": dtype.str, "data": bytes}`` for ``np.float32(1.5)``,
    ``np.int64(3)``, ``np.datetime64(...)``... (every ``numpy.generic``).
``pandas.Index`` / ``pandas.Series`` / ``pandas.DataFrame``
    the values of each column (and of the index and the column labels) as
    above, or for a pandas extension dtype whose name rebuilds it (``str``,
    ``string``, ``Int64``, ``boolean``...) ``{"dtype": name, "items": [...]}``
    (``pd.NA`` as None);
    a ``RangeIndex`` as its start, stop and step; the names as values.
    Categorical and other dtypes whose name does not rebuild them, and
    ``MultiIndex``, are not encoded (a placeholder says so).
``torch.Tensor``
    ``{"dtype": "torch.float32", "shape": [...], "requires_grad": bool,
    "sha256": hex, "data": bytes}``: the CPU copy of the tensor, C order,
    little-endian. The device is not kept (a replayed tensor is on the CPU).

An argument whose encoding is bigger than pcs's inline limit (64 KiB) is
stored whole as a content-addressed artifact of the run, and its param
names that artifact. Decoding an array needs its library imported (pcs never imports
one); ``data`` must hash to ``sha256``.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

from pcs.hookspecs import hookimpl

__all__ = ["VERSION", "pcs_register_encoders"]

#: the version of every extension this plugin writes
VERSION = 1


def _module(name: str) -> Any:
    """An already imported library (decoding never imports one)."""
    module = sys.modules.get(name)
    if module is None:
        raise LookupError(f"{name} is not imported; import {name} before decoding its values")
    return module


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checked_data(payload: dict[str, Any]) -> bytes:
    data = payload["data"]
    if _digest(data) != payload["sha256"]:
        raise ValueError("the array's bytes do not match their sha256")
    return bytes(data)


# -- NumPy -------------------------------------------------------------------------------
def _little(dtype: Any) -> Any:
    return dtype.newbyteorder("<") if dtype.byteorder not in ("|", "<") else dtype


def encode_array(array: Any) -> dict[str, Any]:
    """The payload of a NumPy array (see the module's documentation)."""
    dtype = array.dtype
    shape = [int(n) for n in array.shape]
    if dtype.fields is not None:
        raise TypeError(f"structured dtype {dtype} is not encoded; pass its fields separately")
    if dtype.hasobject:
        return {"dtype": "|O", "shape": shape, "items": array.ravel(order="C").tolist()}
    little = _little(dtype)
    data = array.astype(little, copy=False).tobytes(order="C")
    return {"dtype": little.str, "shape": shape, "sha256": _digest(data), "data": data}


def decode_array(payload: dict[str, Any], version: int) -> Any:
    """The NumPy array of a payload."""
    np = _module("numpy")
    shape = tuple(payload["shape"])
    if "items" in payload:
        items = payload["items"]
        flat = np.empty(len(items), dtype=object)
        for index, item in enumerate(items):
            flat[index] = item
        return flat.reshape(shape)
    dtype = np.dtype(payload["dtype"])
    return np.frombuffer(_checked_data(payload), dtype=dtype).reshape(shape).copy()


def _is_numpy_scalar(cls: type) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and issubclass(cls, np.generic)


def encode_scalar(value: Any) -> dict[str, Any]:
    """The payload of a NumPy scalar: its dtype and bytes."""
    np = _module("numpy")
    dtype = value.dtype
    if dtype.fields is not None or dtype.hasobject:
        raise TypeError(f"numpy scalar of dtype {dtype} is not encoded")
    little = _little(dtype)
    return {"dtype": little.str, "data": np.asarray(value).astype(little).tobytes()}


def decode_scalar(payload: dict[str, Any], version: int) -> Any:
    """The NumPy scalar of a payload."""
    np = _module("numpy")
    return np.frombuffer(bytes(payload["data"]), dtype=np.dtype(payload["dtype"]))[0]


# -- pandas ------------------------------------------------------------------------------
def _values(values: Any) -> dict[str, Any]:
    """The payload of the values of a Series (a column) or an Index."""
    np = _module("numpy")
    pd = _module("pandas")
    dtype = values.dtype
    if isinstance(dtype, np.dtype):
        return {"array": values.to_numpy()}
    name = str(dtype)
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.pandas_dtype(name) != dtype:
        raise TypeError(f"pandas dtype {dtype!r} is not encoded: its name does not rebuild it")
    missing = pd.NA  # an extension array's missing value: None in the payload
    return {"dtype": name,
            "items": [None if item is missing else item for item in values.astype(object)]}


def _from_values(payload: dict[str, Any]) -> Any:
    pd = _module("pandas")
    if "array" in payload:
        return payload["array"]
    return pd.array(payload["items"], dtype=pd.api.types.pandas_dtype(payload["dtype"]))


def encode_index(index: Any) -> dict[str, Any]:
    """The payload of a pandas Index (a RangeIndex by its range)."""
    pd = _module("pandas")
    if isinstance(index, pd.MultiIndex):
        raise TypeError("a pandas MultiIndex is not encoded; reset_index() first")
    if type(index) is pd.RangeIndex:
        return {"name": index.name, "range": (index.start, index.stop, index.step)}
    return {"name": index.name, "values": _values(index)}


def decode_index(payload: dict[str, Any], version: int) -> Any:
    """The pandas Index of a payload."""
    pd = _module("pandas")
    if "range" in payload:
        return pd.RangeIndex(*payload["range"], name=payload["name"])
    return pd.Index(_from_values(payload["values"]), name=payload["name"])


def encode_series(series: Any) -> dict[str, Any]:
    """The payload of a pandas Series: its name, index and values."""
    return {"name": series.name, "index": series.index, "values": _values(series)}


def decode_series(payload: dict[str, Any], version: int) -> Any:
    """The pandas Series of a payload."""
    pd = _module("pandas")
    return pd.Series(_from_values(payload["values"]), index=payload["index"],
                     name=payload["name"], copy=True)


def encode_frame(frame: Any) -> dict[str, Any]:
    """The payload of a pandas DataFrame: its column labels, index and columns' values."""
    columns = [_values(frame.iloc[:, position]) for position in range(frame.shape[1])]
    return {"columns": frame.columns, "index": frame.index, "data": columns}


def decode_frame(payload: dict[str, Any], version: int) -> Any:
    """The pandas DataFrame of a payload."""
    pd = _module("pandas")
    data = {position: _from_values(values) for position, values in enumerate(payload["data"])}
    frame = pd.DataFrame(data, index=payload["index"], copy=True)
    frame.columns = payload["columns"]
    return frame


# -- PyTorch -----------------------------------------------------------------------------
def encode_tensor(tensor: Any) -> dict[str, Any]:
    """The payload of a PyTorch tensor: dtype, shape, requires_grad and CPU bytes."""
    torch = _module("torch")
    cpu = tensor.detach().to("cpu").contiguous()
    if cpu.dtype == torch.bfloat16:  # NumPy has no bfloat16: its bits, as int16
        array = cpu.view(torch.int16).numpy()
    else:
        array = cpu.numpy()
    data = array.astype(_little(array.dtype), copy=False).tobytes(order="C")
    return {"dtype": str(cpu.dtype), "shape": [int(n) for n in cpu.shape],
            "requires_grad": bool(tensor.requires_grad), "sha256": _digest(data), "data": data}


def decode_tensor(payload: dict[str, Any], version: int) -> Any:
    """The PyTorch tensor (on the CPU) of a payload."""
    torch = _module("torch")
    name = payload["dtype"].removeprefix("torch.")
    dtype = getattr(torch, name)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{payload['dtype']!r} is not a torch dtype")
    data = bytearray(_checked_data(payload))
    if data:
        flat = torch.frombuffer(data, dtype=dtype)
    else:
        flat = torch.empty(0, dtype=dtype)
    tensor = flat.reshape(payload["shape"]).clone()
    return tensor.requires_grad_(payload["requires_grad"])


@hookimpl
def pcs_register_encoders(registry: Any) -> None:
    """Register NumPy, pandas and PyTorch values (by name: nothing is imported here)."""
    add = registry.register
    add("numpy.ndarray", name="numpy.ndarray", version=VERSION,
        encode=encode_array, decode=decode_array)
    add(_is_numpy_scalar, name="numpy.scalar", version=VERSION,
        encode=encode_scalar, decode=decode_scalar)
    add("pandas.DataFrame", name="pandas.DataFrame", version=VERSION,
        encode=encode_frame, decode=decode_frame)
    add("pandas.Series", name="pandas.Series", version=VERSION,
        encode=encode_series, decode=decode_series)
    for index_class in ("Index", "RangeIndex", "DatetimeIndex", "TimedeltaIndex"):
        add(f"pandas.{index_class}", name=f"pandas.{index_class}", version=VERSION,
            encode=encode_index, decode=decode_index)
    add("torch.Tensor", name="torch.Tensor", version=VERSION,
        encode=encode_tensor, decode=decode_tensor)
