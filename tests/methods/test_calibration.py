import numpy as np

from tailorlm.methods.calibration import calibrate, label_bias


def test_bias_is_mean_content_free_distribution():
    cf = np.log(np.array([[0.8, 0.2], [0.6, 0.4]]))
    np.testing.assert_allclose(np.exp(label_bias(cf)), [0.7, 0.3])


def test_calibration_removes_a_constant_label_bias():
    # Every input leans to label 0 by the same factor; calibration divides it out (Zhao et al.)
    true = np.log(np.array([[0.3, 0.7], [0.6, 0.4], [0.45, 0.55]]))
    skew = np.log(np.array([4.0, 1.0]))
    biased = true + skew
    assert (biased.argmax(1) == 0).all()
    cf = np.log(np.array([[0.5, 0.5]])) + skew  # content-free input: no signal, only the bias
    fixed = calibrate(biased, label_bias(cf))
    assert list(fixed.argmax(1)) == [1, 0, 1]
    assert calibrate(biased, None) is biased
