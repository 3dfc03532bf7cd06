"""Character sets into DICOM JSON and PN matching on each component group (PS3.5 §6.1, §6.2.1; PS3.18 §F.2.2)."""

from __future__ import annotations

import uuid

import pytest
from dicomweb_client import DICOMwebClient

from tests.imaging.factory import ct_dataset, new_uid

JAPANESE = "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
PATIENTS = {
    # name → (Specific Character Set, PN value, expected DICOM JSON PN object)
    "latin1": ("ISO_IR 100", "Müller^Jürgen", {"Alphabetic": "Müller^Jürgen"}),
    "utf8": ("ISO_IR 192", "Wang^XiaoDong=王^小東", {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}),
    "japanese": (
        ["ISO 2022 IR 13", "ISO 2022 IR 87"],
        JAPANESE,
        {"Alphabetic": "ﾔﾏﾀﾞ^ﾀﾛｳ", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
    ),
    "japanese_ascii": (
        ["", "ISO 2022 IR 87"],
        "Yamada^Tarou=山田^太郎=やまだ^たろう",
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
    ),
}


@pytest.fixture(scope="module")
def named(dicomweb_url: str, auth: dict[str, str]) -> dict[str, str]:
    """One study per character set, under one unique Patient ID prefix."""
    tag = uuid.uuid4().hex[:6]
    client = DICOMwebClient(dicomweb_url, headers=auth)
    studies = {"prefix": f"CS-{tag}"}
    for name, (charset, value, _) in PATIENTS.items():
        study = studies[name] = new_uid()
        ds = ct_dataset(study, new_uid(), charset=charset, patient_name=value, patient_id=f"CS-{tag}-{name}")
        client.store_instances([ds])
    return studies


@pytest.mark.parametrize("name", list(PATIENTS))
def test_person_name_groups_round_trip_into_dicom_json(
    client: DICOMwebClient, named: dict[str, str], name: str
) -> None:
    (study,) = client.search_for_studies(search_filters={"StudyInstanceUID": named[name]})
    assert study["00100010"]["Value"] == [PATIENTS[name][2]]
    (metadata,) = client.retrieve_study_metadata(named[name])
    assert metadata["00100010"]["Value"] == [PATIENTS[name][2]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ﾔﾏﾀﾞ*", {"japanese"}),  # Alphabetic (half-width katakana, IR 13)
        ("山田*", {"japanese", "japanese_ascii"}),  # Ideographic (kanji, IR 87)
        ("やまだ^たろう", {"japanese", "japanese_ascii"}),  # Phonetic (hiragana), exact
        ("yamada*", {"japanese_ascii"}),  # case-insensitive Alphabetic
        ("*=山田^太郎=やまだ^たろう", {"japanese", "japanese_ascii"}),  # group by group
        ("Yamada*=王*", set()),
        ("müller^jürgen", {"latin1"}),
        ("王^小東", {"utf8"}),
    ],
)
def test_matching_works_on_each_component_group(
    client: DICOMwebClient, named: dict[str, str], query: str, expected: set[str]
) -> None:
    results = client.search_for_studies(search_filters={"PatientID": f"{named['prefix']}-*", "PatientName": query})
    assert {result["0020000D"]["Value"][0] for result in results} == {named[name] for name in expected}


def test_fuzzy_matching_is_component_prefix_matching(client: DICOMwebClient, named: dict[str, str]) -> None:
    filters = {"PatientID": f"{named['prefix']}-*", "PatientName": "jürg"}
    assert client.search_for_studies(search_filters=filters) == []
    fuzzy = client.search_for_studies(search_filters=filters, fuzzymatching=True)
    assert {result["0020000D"]["Value"][0] for result in fuzzy} == {named["latin1"]}
    kana = client.search_for_studies(
        search_filters={"PatientID": f"{named['prefix']}-*", "PatientName": "たろ"}, fuzzymatching=True
    )
    assert {result["0020000D"]["Value"][0] for result in kana} == {named["japanese"], named["japanese_ascii"]}
