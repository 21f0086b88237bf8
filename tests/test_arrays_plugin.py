"""The first-party arrays plugin (plugins/pcs_arrays): NumPy arrays and scalars, pandas
frames, series and indexes, PyTorch tensors — exact, content-hashed, replayable."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import FlushingClient
from replay_support import CodeDir

import pcs
from pcs import canon


def roundtrip(value: Any) -> Any:
    tree = canon.encode(value, strict=True)
    canon.validate(tree)
    return canon.decode(tree)


ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array([1.5, -0.0, np.nan, np.inf]),
    np.array([[1, 2], [3, 4]], dtype=np.int64),
    np.array([True, False]),
    np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
    np.array(["2024-01-01", "2024-03-05"], dtype="datetime64[D]"),
    np.array(["ab", "cdé"]),
    np.array([b"x", b"yz"]),
    np.array(7.0),  # 0-d
    np.zeros((0, 3), dtype=np.int16),  # empty
    np.arange(20, dtype=np.uint8).reshape(4, 5).T,  # not contiguous
    np.arange(10)[::3],  # a strided view
    np.array([1, 2, 3], dtype=">i4"),  # big-endian
    np.array([{"a": 1}, None, (1, 2)], dtype=object),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_arrays_round_trip_exactly(array: np.ndarray) -> None:
    tree = canon.encode(array, strict=True)
    assert tree[:3] == ["x", "numpy.ndarray", 1]
    back = roundtrip(array)
    assert type(back) is np.ndarray
    assert back.shape == array.shape
    assert back.dtype == array.dtype.newbyteorder("=") or back.dtype == array.dtype
    if array.dtype == object:
        assert back.tolist() == array.tolist()
    else:
        assert np.array_equal(back, array, equal_nan=array.dtype.kind in "fc")
    assert back.flags.writeable


def test_equal_content_hashes_equal_and_one_element_changes_it() -> None:
    base = np.linspace(0, 1, 1000)
    same = base.copy()
    changed = base.copy()
    changed[500] += 1e-12
    assert canon.digest(canon.encode(base)) == canon.digest(canon.encode(same))
    assert canon.digest(canon.encode(base)) != canon.digest(canon.encode(changed))
    as_f32 = base.astype(np.float32)
    assert canon.digest(canon.encode(base)) != canon.digest(canon.encode(as_f32))
    assert canon.digest(canon.encode(base.reshape(10, 100))) != canon.digest(canon.encode(base))
    # the byte layout is fixed: little-endian C order, whatever the array's own layout
    fortran = np.asfortranarray(base.reshape(10, 100))
    swapped = base.astype(">f8")
    assert canon.digest(canon.encode(fortran)) == canon.digest(canon.encode(base.reshape(10, 100)))
    assert canon.digest(canon.encode(swapped)) == canon.digest(canon.encode(base))


def test_the_digest_is_the_same_in_another_process(tmp_path: Path) -> None:
    array = np.arange(100, dtype=np.float64) / 7
    script = textwrap.dedent("""
        import numpy as np
        from pcs import canon
        print(canon.digest(canon.encode(np.arange(100, dtype=np.float64) / 7)))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120, check=True,
                            env={**__import__("os").environ, "PYTHONHASHSEED": "123"})
    assert result.stdout.strip() == canon.digest(canon.encode(array))


def test_the_payload_is_the_documented_byte_layout() -> None:
    import hashlib

    tree = canon.encode(np.array([[1, 2, 3]], dtype=np.int32))
    payload = canon.decode(tree[3])
    data = np.array([1, 2, 3], dtype="<i4").tobytes()
    assert payload == {"dtype": "<i4", "shape": [1, 3], "data": data,
                       "sha256": hashlib.sha256(data).hexdigest()}


def test_tampered_bytes_are_refused() -> None:
    tree = canon.encode(np.array([1.0, 2.0]))
    payload = canon.decode(tree[3])
    payload["data"] = np.array([1.0, 3.0]).tobytes()
    with pytest.raises(pcs.SpecError, match="sha256"):
        canon.decode(["x", "numpy.ndarray", 1, canon.encode(payload)])


def test_structured_arrays_are_placeholders_with_the_reason() -> None:
    array = np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])
    tree = canon.encode(array)
    assert tree[0] == "placeholder"
    assert "structured dtype" in tree[1]["reason"]


@pytest.mark.parametrize("value", [np.float32(1.5), np.int64(-3), np.uint8(255), np.bool_(True),
                                   np.float64(0.1), np.complex128(1j),
                                   np.datetime64("2024-01-01T10:00")])
def test_numpy_scalars_round_trip_with_their_type(value: Any) -> None:
    back = roundtrip(value)
    assert type(back) is type(value)
    assert back == value
    assert canon.encode(value)[:2] == ["x", "numpy.scalar"]


def test_numpy_scalars_of_different_types_hash_differently() -> None:
    digests = {canon.digest(canon.encode(v)) for v in (np.int64(1), np.int32(1), np.float64(1),
                                                        1, 1.0)}
    assert len(digests) == 5


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": [1, 2, 3],
            "b": ["x", "y", None],
            "c": [0.5, np.nan, 2.0],
            "d": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
            "e": pd.array([1, None, 3], dtype="Int64"),
        },
        index=pd.Index(["r1", "r2", "r3"], name="row"),
    )


def test_frames_series_and_indexes_round_trip() -> None:
    frame = _frame()
    pd.testing.assert_frame_equal(roundtrip(frame), frame)
    series = frame["c"]
    pd.testing.assert_series_equal(roundtrip(series), series)
    pd.testing.assert_index_equal(roundtrip(frame.index), frame.index)
    ranged = pd.DataFrame({"v": [1.0, 2.0]})
    back = roundtrip(ranged)
    pd.testing.assert_frame_equal(back, ranged)
    assert type(back.index) is pd.RangeIndex
    duplicates = pd.DataFrame([[1, 2]], columns=["k", "k"])
    pd.testing.assert_frame_equal(roundtrip(duplicates), duplicates)


def test_frames_hash_by_content() -> None:
    frame = _frame()
    changed = frame.copy()
    changed.loc["r2", "a"] = 20
    assert canon.digest(canon.encode(frame)) == canon.digest(canon.encode(frame.copy()))
    assert canon.digest(canon.encode(frame)) != canon.digest(canon.encode(changed))


def test_unsupported_pandas_values_are_placeholders_with_the_reason() -> None:
    categorical = pd.Series(["a", "b"], dtype="category")
    assert "not encoded" in canon.encode(categorical)[1]["reason"]
    multi = pd.DataFrame({"v": [1, 2]},
                         index=pd.MultiIndex.from_tuples([(1, "a"), (2, "b")]))
    assert canon.find_placeholders(canon.encode(multi))


SOURCE = """
import numpy as np
import pandas as pd
import pcs

@pcs.tracked
def total(weights: np.ndarray, frame: pd.DataFrame, scale: np.float32) -> float:
    return float(weights.sum() + frame["a"].sum()) * float(scale)
"""


def test_a_tracked_call_stores_a_big_array_as_an_artifact_and_replay_rebuilds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: FlushingClient
) -> None:
    code = CodeDir(tmp_path / "code", monkeypatch)
    module = code.load(code.write(SOURCE))
    weights = np.random.default_rng(0).random(100_000)
    frame = _frame()
    expected = float(weights.sum() + 6) * 2.0
    assert module.total(weights, frame, np.float32(2.0)) == expected
    run = pcs.last_run()
    assert isinstance(run, pcs.ComponentRun)
    assert run.is_reproducible, run.not_reproducible_reasons
    stored = client.get_run(run.identifier)
    assert stored.data.params["arg.weights"].startswith("<artifact sha256:")
    again = run.rerun()
    assert again.return_value == expected
    assert again.run_command.argument_set == run.run_command.argument_set
    # the same content in a fresh array: the same ArgumentSet, so the same RunCommand
    module.total(weights.copy(), frame.copy(), np.float32(2.0))
    third = pcs.last_run()
    assert isinstance(third, pcs.ComponentRun)
    assert third.run_command.identifier == run.run_command.identifier
    code.cleanup()


def test_torch_tensors_round_trip() -> None:
    torch = pytest.importorskip("torch", reason="PyTorch is not installed on this machine")
    for tensor in (torch.arange(6, dtype=torch.float32).reshape(2, 3),
                   torch.tensor([1, 2], dtype=torch.bfloat16), torch.zeros(0)):
        back = roundtrip(tensor)
        assert torch.equal(back, tensor)
        assert back.dtype == tensor.dtype
