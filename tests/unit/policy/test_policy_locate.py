"""The TOML line locator finds keys and string values across TOML's syntax forms."""

from __future__ import annotations

from broker.policy._locate import Locator

TEXT = """\
# comment with "quotes" and [[brackets]]
top = "value"
[[rules]]
name = 'literal'
recipients = [
  "A",  # a comment ] with a bracket
  "B",
]
note = \"\"\"two
lines ""\"\"\"
[[rules]]
"quoted key" = "x"
after = "C"
"""


def test_value_in_multiline_array_is_found_on_its_own_line() -> None:
    """Each element of a multi-line array is located on its own line."""
    assert Locator(TEXT).line("rules", 0, "recipients", "B") == 7


def test_key_after_multiline_string_is_found() -> None:
    """Multi-line strings (with quotes before the closing delimiter) do not shift later lines."""
    assert Locator(TEXT).line("rules", 1, "after", "C") == 13


def test_quoted_key_is_found() -> None:
    """A quoted key is indexed by its unquoted text."""
    assert Locator(TEXT).line("rules", 1, "quoted key") == 12


def test_missing_key_falls_back_to_table_header() -> None:
    """An absent key is reported at its table's header."""
    assert Locator(TEXT).line("rules", 1, "senders") == 11


def test_root_key_is_found() -> None:
    """A key before any table belongs to the root table."""
    assert Locator(TEXT).line("", 0, "top") == 2
