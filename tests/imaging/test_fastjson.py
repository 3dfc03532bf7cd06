"""The raw-bytes DICOM JSON fast path gives exactly pydicom's JSON, on pydicom's own test files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.uid import UID

from oncostruct_imaging import fastjson
from oncostruct_imaging.parsing import dataset_json
from tests.imaging.factory import ct_dataset, new_uid, to_bytes


def _read(path: str | Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)


def _both(path: str | Path) -> tuple[str, str, int] | None:
    """(pydicom's JSON, the fast path's JSON, elements the fast path converted) or None if not applicable."""
    ds = _read(path)
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if not syntax.is_transfer_syntax or not syntax.is_little_endian or syntax.is_implicit_VR:
        return None
    charset = ds.get_item(0x00080005)
    codec = fastjson.charset_codec(charset.value if charset is not None else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow = json.dumps(dataset_json(_read(path), "", "/x", 1024), sort_keys=True)
        fast_ds = _read(path)
        fast = json.dumps(dataset_json(fast_ds, "", "/x", 1024, True, codec), sort_keys=True)
    converted = sum(isinstance(fast_ds.get_item(tag), pydicom.dataelem.RawDataElement) for tag in fast_ds.keys())  # noqa: SIM118
    return slow, fast, converted


def test_fast_path_matches_pydicom_on_its_test_files() -> None:
    compared = converted = 0
    # The files shipped inside the pydicom wheel (get_testdata_files would try to download more).
    for path in sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm")):
        try:
            result = _both(path)
        except Exception:  # noqa: S112 - files pydicom itself cannot read are not the subject here
            continue
        if result is None:
            continue
        slow, fast, fast_elements = result
        assert fast == slow, Path(path).name
        compared += 1
        converted += fast_elements
    print(f"compared {compared} files, {converted} elements by the fast path")
    assert compared >= 30  # explicit VR little endian files in pydicom's bundled test data
    assert converted >= 1000  # the fast path did convert most of their elements


def test_fast_path_matches_pydicom_on_a_generated_ct(tmp_path: Path) -> None:
    ds = ct_dataset(new_uid(), new_uid(), 3, patient_name="Müller^Jürgen")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]  # an empty value inside a multi-valued attribute
    ds.StudyDescription = " leading space"
    ds.SeriesDescription = "Nacken ü"
    path = tmp_path / "ct.dcm"
    path.write_bytes(to_bytes(ds))
    result = _both(path)
    assert result is not None
    slow, fast, converted = result
    assert fast == slow
    assert converted > 20


@pytest.mark.parametrize(
    ("value", "codec"),
    [(b"ISO_IR 192", "utf-8"), ("ISO_IR 100", "latin-1"), (None, "latin-1"), (b"\\ISO 2022 IR 87", None)],
)
def test_charset_codec(value: object, codec: str | None) -> None:
    assert fastjson.charset_codec(value) == codec
