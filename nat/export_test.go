package nat

// For the external tests.
var (
	FlushConntrackMsgs        = flushConntrackMsgs
	FlushInboundConntrackMsgs = flushInboundConntrackMsgs
	LinkLocal                 = linkLocal
)
