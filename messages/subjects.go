package messages

// The NATS API: a micro service named ServiceName whose endpoints listen on
// warmpool.v1.<pool>.<verb>.
const (
	ServiceName    = "warmpool"
	ServiceVersion = "0.1.0"
	SubjectPrefix  = "warmpool.v1"
)

// TimeoutHeader, optional on a request, is how many milliseconds its caller
// waits for the reply. A node starts no work for a request whose caller has
// stopped waiting (it would make a session nobody knows of), and passes
// what is left on when it forwards the request to another node.
const TimeoutHeader = "Warmpool-Timeout"

// Verbs, the last token of a subject.
const (
	VerbAcquire  = "acquire"
	VerbRelease  = "release"
	VerbRenew    = "renew"
	VerbStats    = "stats"
	VerbWarmup   = "warmup"
	VerbShutdown = "shutdown"
)

// Verbs lists every verb in the order the service registers them.
var Verbs = []string{VerbAcquire, VerbRelease, VerbRenew, VerbStats, VerbWarmup, VerbShutdown}

// Subject is the subject of one verb of one pool.
func Subject(pool, verb string) string { return SubjectPrefix + "." + pool + "." + verb }

// DrainSubject is where node takes a drain request (any body): it stops
// taking new sessions and leaves when its last lease ends.
func DrainSubject(node string) string { return SubjectPrefix + ".node." + node + ".drain" }
