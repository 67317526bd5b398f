from tailorlm.engine.train import TrainConfig
from tailorlm.methods.trainable import MAX_EVALUATIONS, spaced


def test_many_short_epochs_evaluate_at_most_ten_times():
    config = TrainConfig(epochs=20, batch_size=8)
    out = spaced(config, n_rows=12)  # 2 steps an epoch, 40 in all
    assert out.eval_every == 4 and out.checkpoint_every == 0  # checkpoints go by the clock
    assert 40 // out.eval_every == MAX_EVALUATIONS == 10
    assert spaced(TrainConfig(epochs=10), 12) == TrainConfig(epochs=10)  # per epoch
