"""Progress on stderr: nothing at verbose=0; at verbose=1, in a log (not a terminal), one
plain line per phase and per epoch, each naming the model, no carriage returns."""
import numpy as np
import pytest

import lfagg
from lfagg._progress import bags_count
from lfagg.datasets import make_circles_bags

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def circles():
    return make_circles_bags(24, 12, random_state=0)


def fit(kind, verbose, bags, y):
    if kind == "LearnedVLAD":
        return lfagg.LearnedVLAD(3, n_epochs=2, batch_size=8, random_state=0, verbose=verbose).fit(bags, y)
    return lfagg.BagClassifier(lfagg.FisherVector(2, random_state=0), verbose=verbose).fit(bags, y)


@pytest.mark.parametrize("kind", ["LearnedVLAD", "BagClassifier"])
def test_verbose_zero_prints_nothing(kind, circles, capsys):
    fit(kind, 0, *circles)
    lfagg.train_encoder(circles[0], circles[1], lambda R, t: (0.0, np.zeros_like(R)), "bow", np.eye(2),
                        np.ones((2, 2)), 1.0, n_epochs=2, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_learned_reports_its_phases_and_epochs_in_plain_lines(circles, capsys):
    model = fit("LearnedVLAD", 1, *circles)
    out, err = capsys.readouterr()
    assert out == "" and "\r" not in err
    lines = err.splitlines()
    assert all(line.startswith("LearnedVLAD(n_codewords=3): ") for line in lines)
    phases = [line.split(": ", 1)[1].rsplit(" ... ", 1)[0] for line in lines if " ... " in line]
    assert phases == ["K-Means codebook on 288 local features", "encoding 24 bags",
                      "choosing l2 on held-out bags (6 inputs)", "fitting the classifier (L-BFGS)",
                      "encoding 24 bags", "fine-tuning the classifier"]
    epochs = [line for line in lines if ": epoch " in line]
    assert len(epochs) == 2 and epochs[0].startswith("LearnedVLAD(n_codewords=3): epoch 1/2, loss ")
    assert f"{model.history_['loss'][1]:.4f}" in epochs[1]


def test_bag_classifier_reports_its_phases(circles, capsys):
    fit("BagClassifier", 1, *circles)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ... ")[0] for line in lines] == [
        "BagClassifier(FisherVector): fitting the encoder on 288 local features",
        "BagClassifier(FisherVector): encoding 24 bags",
        "BagClassifier(FisherVector): choosing l2 on held-out bags (8 inputs)",
        "BagClassifier(FisherVector): fitting the classifier (L-BFGS)"]


def test_long_work_reports_its_count_in_a_log(monkeypatch, capsys):
    from lfagg import _progress

    monkeypatch.setattr(_progress, "LOG_INTERVAL_S", 0.0)  # every step is "long" here
    with _progress.progress_bar("job", 3, 1) as bar:
        for _ in range(3):
            bar.update()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["job: 1/3", "job: 2/3", "job"]


def test_work_stopped_by_an_exception_is_not_logged_as_done(capsys):
    """An interrupted epoch's line showed the mean loss of its first batches as the epoch's."""
    from lfagg import _progress

    with pytest.raises(KeyboardInterrupt), _progress.progress_bar("epoch 4/200", 10, 1) as bar:
        bar.update(3)
        bar.set_postfix(loss="0.1319")
        raise KeyboardInterrupt
    assert capsys.readouterr().err.split(" (")[0] == "epoch 4/200: stopped at 3/10"


def test_search_reports_its_folds_then_its_refits(circles, capsys):
    """In a log, each stage also says when it starts: a search's first line came after its
    first fold, minutes into the work."""
    search = dict(n_codewords=2, gamma_scale=1.0, learning_rate=1e-2, max_epochs=1, cv=2, random_state=0, verbose=1)
    lfagg.LearnedBoWCV(**search, n_estimators=3).fit(*circles)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "LearnedBoWCV: 1 candidates, 2 folds: 0/2"
    assert lines[1].startswith("LearnedBoWCV: 1 candidates, 2 folds (")
    assert lines[2].startswith("LearnedBoWCV: refitting {'pooling': 'mean', 'n_codewords': 2,")
    assert lines[2].endswith("with 3 seed(s): 0/3") and "with 3 seed(s) (" in lines[3]
    lfagg.LearnedBoWCV(**search, n_estimators=1).fit(*circles)
    lines = capsys.readouterr().err.splitlines()
    assert lines[2].startswith("LearnedBoW(n_codewords=2): K-Means codebook")  # a single refit shows its phases


@pytest.mark.parametrize("n, text", [(0, "0 bags"), (1, "1 bag"), (2, "2 bags"), (1024, "1,024 bags")])
def test_bag_counts_read_as_english(n, text):
    assert bags_count(n) == text
