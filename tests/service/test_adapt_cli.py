"""`roomtone adapt` on the command line: the corpus mix is optional, and a corpus folder that is not there
is a clear error before anything is loaded or trained."""

from __future__ import annotations

from service.cli.main import build_parser, main


def test_a_missing_corpus_folder_exits_2_naming_it(tmp_path, capsys):
    code = main(["adapt", "--model", str(tmp_path / "m.pt"), "--audio", str(tmp_path), "--out", str(tmp_path / "o.pt"),
                 "--corpus", str(tmp_path / "no-corpus")])
    assert code == 2
    err = capsys.readouterr().err
    assert "roomtone adapt:" in err and str(tmp_path / "no-corpus") in err and "corpus folder not found" in err
    assert not (tmp_path / "o.pt").exists()


def test_the_corpus_is_optional_and_statistics_are_frozen_by_default(tmp_path):
    args = build_parser().parse_args(["adapt", "--model", "m.pt", "--audio", str(tmp_path), "--out", "o.pt"])
    assert args.corpus == [] and args.statistics == "frozen" and args.statistics_share == 0.0 and args.anchor == 0.0
    args = build_parser().parse_args(["adapt", "--model", "m.pt", "--audio", "a", "--out", "o.pt",
                                      "--corpus", "c1", "--corpus", "c2", "--corpus-fraction", "0.3"])
    assert args.corpus == ["c1", "c2"] and args.corpus_fraction == 0.3
