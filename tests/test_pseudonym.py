from __future__ import annotations

import os
import stat

from pipeline.pseudonym import Pseudonymiser, load_secret


def test_secret_created_private_and_stable(tmp_path, monkeypatch):
    path = tmp_path / "k" / "secret.key"
    monkeypatch.setenv("RADPIPE_SECRET_FILE", str(path))
    a = Pseudonymiser().key("12345", "patient")
    assert path.exists() and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Pseudonymiser().key("12345", "patient") == a
    assert a.startswith("P-") and len(a) == 18 and "12345" not in a


def test_keys_depend_on_secret_and_kind(tmp_path):
    s1 = load_secret(tmp_path / "a.key")
    s2 = load_secret(tmp_path / "b.key")
    assert s1 != s2
    p1, p2 = Pseudonymiser(s1), Pseudonymiser(s2)
    assert p1.key("ACC1", "accession") != p2.key("ACC1", "accession")
    assert p1.key("X", "patient") != p1.key("X", "study")
    assert p1.key("  ACC1 ", "accession") == p1.key("ACC1", "accession")
    assert p1.key("", "patient") == "" and p1.key(None, "patient") == ""


def test_keep_identifiers_opt_out():
    assert Pseudonymiser(keep_identifiers=True).key("Doe^John", "patient") == "Doe^John"


def test_commands_started_together_share_the_one_secret_made_first(tmp_path):
    import multiprocessing

    from pipeline.pseudonym import load_secret

    path = tmp_path / "fresh" / "secret.key"
    with multiprocessing.get_context("fork").Pool(6) as pool:
        secrets_seen = pool.map(load_secret, [path] * 12)
    assert len(set(secrets_seen)) == 1 and len(secrets_seen[0]) == 64
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary left
    assert (path.stat().st_mode & 0o777) == 0o600
