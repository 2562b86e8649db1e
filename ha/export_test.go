package ha

// PauseRenewals stops the renewals of t's lease, as a partition from the
// coordinator would, without ending the term.
func (t *Term) PauseRenewals() { t.paused.Store(true) }

// GenExpected is genExpected, for its table test.
var GenExpected = genExpected
