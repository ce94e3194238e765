import gzip

import pytest

from components.core.corpus import iter_documents, resolve_corpus_files
from components.core.errors import BertpipeError


def test_documents_split_on_blank_lines_and_files(tmp_path):
    (tmp_path / "a.txt").write_text("One.\nTwo.\n\n\n  Three.  \n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as handle:
        handle.write("Four.\n\nFive.\nSix.")
    assert list(iter_documents(str(tmp_path))) == [["One.", "Two."], ["Three."], ["Four."], ["Five.", "Six."]]
    assert list(iter_documents(str(tmp_path / "*.gz"))) == [["Four."], ["Five.", "Six."]]


def test_demo_corpus_is_bundled():
    documents = list(iter_documents("demo"))
    assert len(documents) == 376
    assert sum(len(d) for d in documents) == 15894


@pytest.mark.parametrize("spec", ["does/not/exist.txt", "nothing-*.txt"])
def test_missing_corpus_is_a_clear_error(tmp_path, spec, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BertpipeError, match="corpus"):
        resolve_corpus_files(spec)


def test_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Good.\n\ncaf\xe9 au lait.\n".encode("latin-1"))
    with pytest.raises(BertpipeError, match=r"latin1.txt: line 3 is not valid UTF-8"):
        list(iter_documents(str(path)))


def _gzip_of_many_lines() -> bytes:
    return gzip.compress("".join(f"Sentence number {i} of a document.\n" + ("\n" if i % 5 == 4 else "") for i in range(2000)).encode())


@pytest.mark.parametrize("damage, cause", [
    (lambda data: data[:20] + bytes(b ^ 0xFF for b in data[20:60]) + data[60:], "corrupt or truncated"),  # zlib.error before
    (lambda data: data[: len(data) // 2], "Compressed file ended before the end-of-stream marker was reached"),
])
def test_a_damaged_gzip_corpus_is_one_line_naming_the_file(tmp_path, damage, cause):
    path = tmp_path / "books.txt.gz"
    path.write_bytes(damage(_gzip_of_many_lines()))
    with pytest.raises(BertpipeError) as error:
        list(iter_documents(str(path)))
    message = str(error.value)
    assert message.startswith(f"{path}: cannot be read, it is corrupt or truncated (") and cause in message and "\n" not in message
