package metricsserver

import "errors"

// ErrBinaryMissing is returned (wrapped) when the metrics-server binary is
// not where it is expected and may not be built.
var ErrBinaryMissing = errors.New("metrics-server binary missing")
