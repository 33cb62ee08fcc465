"""Finding data files and streaming records: JSON lines, JSON arrays, globs, lists, and bad input."""

import json

import pytest

from belle.data import records
from belle.data.records import DataError, iter_records, resolve_paths


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_file_glob_and_comma_list_resolve_in_order_without_duplicates(tmp_path):
    a, b, c = (write_lines(tmp_path / f"{n}.jsonl", ['{"text": "x"}']) for n in "abc")
    assert resolve_paths(str(b)) == [b]
    assert resolve_paths(str(tmp_path / "*.jsonl")) == [a, b, c]
    assert resolve_paths(f"{c}, {tmp_path}/[ab].jsonl ,{c}") == [c, a, b]


@pytest.mark.parametrize("spec", ["missing.jsonl", "nowhere/*.jsonl", "", " , "])
def test_a_spec_that_names_no_file_says_how_to_set_data_path(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"set data\.path=…"):
        resolve_paths(spec)


def test_one_missing_part_of_a_list_is_named(tmp_path):
    good = write_lines(tmp_path / "good.jsonl", ['{"text": "x"}'])
    with pytest.raises(DataError, match=r"^nope\.jsonl: no such data file"):
        resolve_paths(f"{good},nope.jsonl")


def test_json_lines_skip_blank_lines_and_report_file_and_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"text": "a"}', "", "   ", '{"text": "b"}'])
    assert list(iter_records(str(path))) == [({"text": "a"}, f"{path}:1"), ({"text": "b"}, f"{path}:4")]


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + '{"text": "好"}\n'.encode())
    assert [r for r, _ in iter_records(str(path))] == [{"text": "好"}]


def test_malformed_line_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", ['{"text": "a"}', '{"text": "b"}', '{"text" "c"}'])
    with pytest.raises(DataError, match=r"train\.jsonl:3: not valid JSON \(Expecting ':' delimiter\): fix the line"):
        list(iter_records(str(path)))


def test_non_utf8_line_is_reported(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes(b'{"text": "a"}\n' + '{"text": "中文"}\n'.encode("gbk"))
    with pytest.raises(DataError, match=r"gbk\.jsonl:2: not UTF-8 text .*re-encode the file as UTF-8"):
        list(iter_records(str(path)))


@pytest.mark.parametrize("line", ['["a", "b"]', '"text"', "3"])
def test_a_record_that_is_not_an_object_is_rejected(tmp_path, line):
    path = write_lines(tmp_path / "d.jsonl", [line])
    with pytest.raises(DataError, match=r"d\.jsonl:1: expected a JSON object"):
        list(iter_records(str(path)))


def test_json_array_streams_across_chunk_borders(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "_CHUNK_CHARS", 7)  # every element and number is cut by a chunk border
    data = [{"instruction": f"第{i}题", "input": "", "output": "答" * i, "n": 12345678 * i} for i in range(40)]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    got = list(iter_records(str(path)))
    assert [r for r, _ in got] == data
    assert got[3][1] == f"{path}:#3"


def test_json_array_reader_keeps_only_a_bounded_buffer(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "_CHUNK_CHARS", 64)
    path = tmp_path / "big.json"
    path.write_text(json.dumps([{"text": "x" * 40}] * 2000), encoding="utf-8")
    sizes = []
    original = records._ArrayReader._value

    def spy(self):
        sizes.append(len(self.buf))
        return original(self)

    monkeypatch.setattr(records._ArrayReader, "_value", spy)
    assert sum(1 for _ in iter_records(str(path))) == 2000
    assert max(sizes) < 3 * 64  # the 100 kB file is never held whole


def test_empty_json_array_and_empty_file_yield_nothing(tmp_path):
    (tmp_path / "empty.json").write_text(" [ ] ")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert list(iter_records(f"{tmp_path}/empty.json,{tmp_path}/empty.jsonl")) == []


def test_jsonl_content_under_a_json_name_is_read_as_lines(tmp_path):
    path = write_lines(tmp_path / "Belle_open_source_1M.json", ['{"text": "a"}', '{"text": "b"}'])
    assert [w for _, w in iter_records(str(path))] == [f"{path}:1", f"{path}:2"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[{"text": "a"},\n {"text": "b" "c"}]', r":2: not valid JSON \(Expecting ',' delimiter\)"),
        ('[{"text": "a"}\n\n {"text": "b"}]', r":3: expected ',' in the JSON array, found '\{'"),
        ('[{"text": "a"},\n', r":2: not valid JSON \(Expecting value\)"),
        ('[{"text": "a"}', r":1: expected ',' in the JSON array, found the end of the file"),
    ],
)
def test_malformed_json_array_names_the_line(tmp_path, monkeypatch, text, problem):
    monkeypatch.setattr(records, "_CHUNK_CHARS", 5)
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError, match=r"bad\.json" + problem + ": fix the record or remove it"):
        list(iter_records(str(path)))


def test_non_object_element_of_a_json_array_is_rejected(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[{"text": "a"}, 7]')
    with pytest.raises(DataError, match=r"d\.json:#1: expected a JSON object, got int"):
        list(iter_records(str(path)))
