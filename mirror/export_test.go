package mirror

// SetAppliedHook makes srv call f, on the goroutine of the session, with
// the replica's pool file mapping after it applies each batch. It must be
// called before Serve.
func SetAppliedHook(srv *Server, f func(seq uint64, mem []byte)) { srv.applied = f }
