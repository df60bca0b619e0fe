"""Chord parsing and framing (jasco_runtime.chords), against audiocraft's documented behaviour."""
from __future__ import annotations

import json
import logging
import pickle

import numpy as np
import pytest

from conftest import shared_path
from jasco_runtime.chords import chord_index, frame_chords, load_chord_mapping, parse_chords, save_chord_mapping_json
from jasco_runtime.errors import InputError


@pytest.fixture(scope="module")
def mapping():
    return load_chord_mapping(shared_path("assets", "chord_to_index_mapping.pkl"))


def _first_frame(frames: np.ndarray, index: int) -> int:
    return int(np.flatnonzero(frames == index)[0])


def test_release_mapping_layout(mapping):
    assert len(mapping) == 194 and mapping["N"] == 0 and mapping["UNK"] == 193


def test_enharmonic_respelling(mapping):
    assert chord_index("Db", mapping) == mapping["C#"]
    assert chord_index("A#", mapping) == mapping["Bb"]
    assert chord_index("G#m", mapping) == mapping["Abm"]
    assert chord_index("A7/Db", mapping) == mapping["A7/C#"]  # bass respelled too
    assert chord_index("Cmin", mapping) == mapping["Cm"]  # quality alias


def test_unknown_label_maps_to_unk_with_a_warning(mapping, caplog):
    with caplog.at_level(logging.WARNING):
        frames = frame_chords([("Xyz13", 0.0)], mapping, 50.0, 10.0)
    assert (frames == mapping["UNK"]).all()
    assert "Xyz13" in caplog.text and "UNK" in caplog.text


@pytest.mark.parametrize("spec", ["C:0 F:2.5 G:5", "C:0, F:2.5, G:5", "(C, 0.0), (F, 2.5), (G, 5)",
                                  "('C', 0.0), ('F', 2.5), ('G', 5.0)"])
def test_string_formats(spec):
    assert parse_chords(spec) == [("C", 0.0), ("F", 2.5), ("G", 5.0)]


def test_slash_and_sharp_labels_in_strings():
    assert parse_chords("A7/C#:1.5 Bbm7b5/Ab:3") == [("A7/C#", 1.5), ("Bbm7b5/Ab", 3.0)]


def test_lab_and_json_files(tmp_path):
    lab = tmp_path / "song.lab"
    lab.write_text("0.000 2.500 C\n2.500 5.000 F\n# comment\n\n5.0 10.0 G\n")
    assert parse_chords(lab) == [("C", 0.0), ("F", 2.5), ("G", 5.0)]
    assert parse_chords(str(lab)) == [("C", 0.0), ("F", 2.5), ("G", 5.0)]
    js = tmp_path / "song.json"
    js.write_text(json.dumps([["C", 0], ["F", 2.5]]))
    assert parse_chords(js) == [("C", 0.0), ("F", 2.5)]
    js.write_text(json.dumps({"chords": [{"chord": "C", "start": 0}, {"chord": "G", "start": 1}]}))
    assert parse_chords(js) == [("C", 0.0), ("G", 1.0)]


@pytest.mark.parametrize("spec, message", [("C:zero", "C:zero"), ("C", "LABEL:START"), ("", "empty"),
                                           ("(C, 0.0) junk", "cannot parse"), ("missing.lab", "cannot read")])
def test_bad_progressions_are_clear(spec, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=message):
        parse_chords(spec)


def test_bad_lab_line_names_the_line(tmp_path):
    lab = tmp_path / "bad.lab"
    lab.write_text("0.0 1.0 C\nnot a line at all here\n")
    with pytest.raises(InputError, match=r"bad.lab:2"):
        parse_chords(lab)


def test_mapping_json_round_trip_and_pickle_safety(mapping, tmp_path):
    save_chord_mapping_json(mapping, tmp_path / "m.json")
    assert load_chord_mapping(tmp_path / "m.json") == mapping
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"N": 0, "x": np.int64(1)}))  # needs an import → refused
    with pytest.raises(InputError, match="refused because it contains code"):
        load_chord_mapping(evil)
