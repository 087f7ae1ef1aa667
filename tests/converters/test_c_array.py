from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from converters.c_array import to_c_array, write_c_array
from edge.errors import PassError


def _bytes_from_source(source: str) -> bytes:
    body = source[source.index("{") + 1 : source.index("};")]
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))


@pytest.mark.parametrize("data", [bytes(range(256)) * 3 + b"TFL3", b"\x00", b"x" * 13])
def test_bytes_round_trip_with_size_and_digest(data: bytes) -> None:
    import hashlib

    header, source = to_c_array(data, "model_data")
    assert _bytes_from_source(source) == data
    assert f"const unsigned int model_data_len = {len(data)}u;" in source
    assert "alignas(16) const unsigned char model_data[]" in source
    assert "#include <stdalign.h>" in source
    assert "extern const unsigned char model_data[];" in header and "extern const unsigned int model_data_len;" in header
    for text in (header, source):
        assert f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}" in text


@pytest.mark.parametrize("name", ["1model", "my-model", "int", "", "a b", "modèle"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(PassError, match="must be a valid C identifier"):
        to_c_array(b"abc", name)


def test_written_pair_compiles_and_is_aligned(tmp_path) -> None:
    data = bytes(range(200)) * 5
    header_path, source_path = write_c_array(data, tmp_path, "g_model")
    assert header_path.name == "g_model.h" and source_path.name == "g_model.c"
    assert not list(tmp_path.glob(".*.tmp"))
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        assert _bytes_from_source(source_path.read_text()) == data
        return
    # A program that checks the bytes, the length and the alignment through the header.
    (tmp_path / "check.c").write_text(
        '#include <stdint.h>\n#include "g_model.h"\n'
        "int main(void) {\n"
        "  unsigned long sum = 0;\n"
        "  for (unsigned int i = 0; i < g_model_len; ++i) sum += g_model[i];\n"
        f"  if (g_model_len != {len(data)}u) return 2;\n"
        f"  if (sum != {sum(data)}ul) return 3;\n"
        "  if (((uintptr_t)g_model) % 16u != 0) return 4;\n"
        "  return 0;\n}\n"
    )
    build = subprocess.run(
        [compiler, "-std=c11", "-Wall", "-Werror", "-o", str(tmp_path / "check"), str(source_path), str(tmp_path / "check.c")],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert build.returncode == 0, build.stderr
    assert subprocess.run([str(tmp_path / "check")], check=False).returncode == 0
    old = subprocess.run([compiler, "-std=c99", "-c", str(source_path), "-o", str(tmp_path / "x.o")],
                         capture_output=True, text=True, check=False)
    assert old.returncode != 0 and "needs C11" in old.stderr


def test_missing_folder_is_refused(tmp_path) -> None:
    with pytest.raises(PassError, match="does not exist"):
        write_c_array(b"abc", tmp_path / "nope", "m")
