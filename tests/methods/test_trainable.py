from tailorlm.engine.train import TrainConfig
from tailorlm.methods.trainable import MAX_EVALUATIONS, spaced


def test_many_short_epochs_evaluate_and_checkpoint_at_most_ten_times():
    config = TrainConfig(epochs=20, batch_size=8)
    out = spaced(config, n_rows=12)  # 2 steps an epoch, 40 in all
    assert out.eval_every == out.checkpoint_every == 4
    assert 40 // out.eval_every == MAX_EVALUATIONS == 10
    assert spaced(TrainConfig(epochs=10), 12) == TrainConfig(epochs=10)  # per epoch
