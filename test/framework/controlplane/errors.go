package controlplane

import "errors"

// ErrBinariesMissing is returned (wrapped) when the control-plane binaries
// are not where they are expected and may not be built.
var ErrBinariesMissing = errors.New("control-plane binaries missing")
