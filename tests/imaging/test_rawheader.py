"""Ingest reads plain files without pydicom (:mod:`oncostruct_imaging.rawheader`); the result must be
exactly what reading them with pydicom gives — checked on pydicom's own test files and on generated ones."""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from oncostruct_imaging import parsing, rawheader
from tests.imaging.factory import ct_dataset, new_uid, to_bytes


def _outcome(path: Path, fast: bool) -> parsing.ParsedInstance | tuple[int, str]:
    try:
        return parsing.parse_instance(path, bulkdata_threshold=1024, fast=fast)
    except parsing.InstanceRejected as rejected:
        return rejected.reason, rejected.detail


def _read_without_pydicom(path: Path) -> bool:
    """Whether the raw reader handles this file on its own (no fallback to pydicom)."""
    with open(path, "rb") as handle:
        header = rawheader.read_header(handle, 1024)
    if header is None:
        return False
    try:
        header.metadata("/x", 1024)
    except rawheader.Unsupported:
        return False
    return True


def test_same_result_as_pydicom_on_its_test_files() -> None:
    compared = raw = 0
    # The files shipped inside the pydicom wheel (get_testdata_files would try to download more).
    for path in sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = _outcome(path, fast=False)
            got = _outcome(path, fast=True)
        assert got == expected, path.name
        compared += 1
        raw += _read_without_pydicom(path)
    print(f"compared {compared} files, {raw} read without pydicom")
    assert compared >= 70
    assert raw >= 25  # most explicit VR little endian files take the raw path


def _with_everything(study: str, series: str) -> Dataset:
    ds = ct_dataset(study, series, 1, patient_name="Müller^Jürgen=ミュラー^ユルゲン=")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ReferringPhysicianName = "Doe^J\\Roe^R"
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]
    ds.FrameIncrementPointer = [0x00181063, 0x00181065]
    ds.add_new(0x00291010, "OB", b"\x01" * 2000)  # a private binary value over the bulk data threshold
    ds.add_new(0x00291011, "OB", b"\x02" * 10)
    item = Dataset()
    item.ScheduledProcedureStepID = "SPS1 "
    item.RequestedProcedureID = "RP1"
    nested = Dataset()
    nested.CodeValue = "T-A0100"
    nested.CodingSchemeDesignator = "SRT"
    nested.CodeMeaning = "Gehirn"
    item.ReasonForRequestedProcedureCodeSequence = Sequence([nested])
    ds.RequestAttributesSequence = Sequence([item, Dataset()])
    ds.ReferencedImageSequence = Sequence([])
    return ds


@pytest.mark.parametrize("undefined_lengths", [False, True])
def test_same_result_on_a_generated_instance_with_sequences_names_and_bulk_data(
    tmp_path: Path, undefined_lengths: bool
) -> None:
    ds = _with_everything(new_uid(), new_uid())
    path = tmp_path / "x.dcm"
    if undefined_lengths:  # sequences and items of undefined length, closed by delimiters
        for element in ds.iterall():
            if element.VR == "SQ":
                element.is_undefined_length = True
                for item in element.value:
                    item.is_undefined_length_sequence_item = True
    path.write_bytes(to_bytes(ds))
    assert _read_without_pydicom(path)
    fast, slow = _outcome(path, fast=True), _outcome(path, fast=False)
    assert fast == slow
    assert isinstance(fast, parsing.ParsedInstance)
    assert fast.patient["name_ideographic"] == "ミュラー^ユルゲン"
    assert fast.series["scheduled_procedure_step_ids"] == ["SPS1"]
    assert fast.bulkdata["00291010"][1] == 2000
    assert '"00291011":{"vr":"OB","InlineBinary":"AgICAgICAgICAg=="}' in fast.metadata_json


def test_files_the_raw_reader_leaves_to_pydicom(tmp_path: Path) -> None:
    japanese = ct_dataset(new_uid(), new_uid(), 1, patient_name="Yamada^Tarou")
    japanese.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    implicit = ct_dataset(new_uid(), new_uid(), 1)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    for name, ds in (("japanese", japanese), ("implicit", implicit)):
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(to_bytes(ds))
        assert not _read_without_pydicom(path), name
        assert _outcome(path, fast=True) == _outcome(path, fast=False)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(to_bytes(ct_dataset(new_uid(), new_uid(), 1))[:700])
    assert _outcome(truncated, fast=True) == _outcome(truncated, fast=False)


def test_sequences_nested_past_the_stack_are_left_to_pydicom(tmp_path: Path) -> None:
    ds = ct_dataset(new_uid(), new_uid(), 1)
    del ds.PixelData
    depth = 3000  # deeper than Python's recursion limit; undefined lengths, closed by delimiters
    opening = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF
    )
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    path = tmp_path / "deep.dcm"
    path.write_bytes(to_bytes(ds) + opening * depth + closing * depth)
    assert not _read_without_pydicom(path)
    assert _outcome(path, fast=True) == _outcome(path, fast=False)


def _element(group: int, number: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2sHI", group, number, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, number, vr, len(value)) + value


def test_a_delimiter_inside_an_item_of_stated_length_is_left_to_pydicom(tmp_path: Path) -> None:
    """Two readings of one file (an early item delimiter smuggling a patient id past one of them) must not
    both be taken: the raw reader leaves the file to pydicom, whose reading the index then keeps."""
    ds = ct_dataset(new_uid(), new_uid(), 1, patient_id="P-1")
    del ds.PixelData
    item = (
        _element(0x0008, 0x0100, b"SH", b"AAAA")
        + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        + _element(0x0010, 0x0020, b"LO", b"EVIL-PATIENT")
        + struct.pack("<HH2sHI", 0x0011, 0x1000, b"OB", 0, 8)  # its value: the sequence delimiter below
    )
    sequence = (
        struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
        + struct.pack("<HHI", 0xFFFE, 0xE000, len(item))
        + item
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    path = tmp_path / "smuggle.dcm"
    path.write_bytes(to_bytes(ds) + sequence)
    assert not _read_without_pydicom(path)
    assert _outcome(path, fast=True) == _outcome(path, fast=False)


def _with_padded_charset(ds: Dataset) -> None:
    ds.add_new(0x00080005, "CS", " ISO_IR 192")


def _with_sequence_before_charset(ds: Dataset) -> None:
    ds.add_new(0x00080005, "CS", "ISO_IR 192")
    item = Dataset()
    item.add_new(0x00100010, "PN", "Müller^Jürgen")
    ds.add_new(0x00080001, "SQ", Sequence([item]))


@pytest.mark.parametrize("change", [_with_padded_charset, _with_sequence_before_charset])
def test_odd_files_get_pydicom_s_reading(tmp_path: Path, change: Callable[[Dataset], None]) -> None:
    ds = ct_dataset(new_uid(), new_uid(), 1, patient_name="Müller^Jürgen")
    change(ds)
    path = tmp_path / "odd.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(to_bytes(ds))
        assert _outcome(path, fast=True) == _outcome(path, fast=False)


def _rewrite(data: bytes, tag: bytes, vr: bytes, value: bytes) -> bytes:
    """``data`` with the first short-form element of ``tag`` (4 bytes, little endian) re-encoded."""
    start = data.index(tag)
    (length,) = struct.unpack_from("<H", data, start + 6)
    return data[:start] + tag + vr + struct.pack("<H", len(value)) + value + data[start + 8 + length :]


@pytest.mark.parametrize("case", ["meta UID as LO", "UID with a leading space"])
def test_encodings_pydicom_reads_its_own_way_are_left_to_it(tmp_path: Path, case: str) -> None:
    ds = ct_dataset(new_uid(), new_uid(), 1)
    data = to_bytes(ds)
    if case == "meta UID as LO":  # pydicom still compares it with the data set's: a mismatch is A900
        data = _rewrite(data, b"\x02\x00\x03\x00", b"LO", b"1.2.3.4.5.6\x00")
    else:  # pydicom's UID strips it: the same instance
        uid = ds.SOPInstanceUID.encode()
        data = _rewrite(data, b"\x08\x00\x18\x00", b"UI", (b" " + uid + b"\x00")[: len(uid) + 1 + len(uid) % 2])
    path = tmp_path / "odd.dcm"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _outcome(path, fast=True) == _outcome(path, fast=False)
