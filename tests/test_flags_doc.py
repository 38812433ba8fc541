"""docs/flags.md is what the scripts' parsers say, and no help text states a default other
than the parser's."""
import argparse

from tools import flags_doc


def test_flag_tables_are_generated_from_the_parsers() -> None:
    current = flags_doc.current_document()
    assert current == flags_doc.updated_document(current), \
        "docs/flags.md is out of date: run python tools/flags_doc.py"


def test_every_flag_of_every_script_is_in_the_tables() -> None:
    document = flags_doc.current_document()
    for build in flags_doc.SCRIPTS.values():
        for action in build()._actions:
            if action.option_strings and action.dest != "help":
                assert f"| `{action.option_strings[0]}` |" in document


def test_help_texts_state_the_real_defaults() -> None:
    assert flags_doc.help_default_mismatches() == []


def test_a_help_text_with_a_stale_default_is_found() -> None:
    def stale() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser()
        parser.add_argument("--rate", type=float, default=0.3, help="fraction pruned (default: 0.2)")
        parser.add_argument("--epochs", type=int, default=182, help="epochs (default: 182)")
        return parser

    assert flags_doc.help_default_mismatches({"x.py": stale}) == [("x.py", "--rate", "0.2", "0.3")]
