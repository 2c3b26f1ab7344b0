"""Calibrated static W8A8: calibration data, the layer-by-layer runner, smoothing, accuracy gate."""
