"""The seeded slice of the kill campaign: SIGKILL during training and build-web, a full disk during a save."""

import faults_kill


def test_kill_slice(tmp_path):
    rows = {row.path: row for row in faults_kill.run(seed=0, scale=0.05, workdir=tmp_path)}
    for row in rows.values():
        assert row.ok, (row.path, row.failures)
    train = rows["train: kill -9 + resume"].extra
    assert train["kills"] >= 3 and train["resumes"] >= 1
    assert train["runs_matched"] == train["runs"] >= 1  # final weights bit-identical to the uninterrupted run
    assert train["torn_loaded"] == train["unreadable_dirs"] == train["wrong_resume"] == 0
    disk = rows["train: full disk during a save"]
    assert disk.cases >= 1 and disk.good_out == disk.good_expected >= 1
    build = rows["data build-web: kill -9 + rerun"].extra
    assert build["torn_tars_visible"] == 0 and build["reruns_identical"] == build["reruns"] >= 1
