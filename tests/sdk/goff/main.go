// goff-client: makes go-feature-flag (github.com/thomaspoignant/go-feature-flag, pinned in
// go.mod) itself produce feature evaluation events through its own webhook or Kafka
// exporter, and prints the oracle it counted on stdout as ONE JSON line:
//
//	{"goff":"v1.44.0","evaluations":N,"per_flag":{...},"per_flag_variation":{"flag/variation":n},"exporter":"webhook"|"kafka"}
//
// per_flag / per_flag_variation count the events go-feature-flag is expected to emit
// (one per evaluation of a flag with trackEvents on, which is the default); the variation
// name is the one the SDK resolved, which is the "variation" field of the event.
//
// Build:  go build -o /root/.cache/flagtally/goff-client .
// Usage:  goff-client [--flags FILE] [--evaluations N] [--seed S] [--users U]
//
//	(--webhook URL [--secret S] [--auth KEY] | --kafka-brokers HOST:PORT --kafka-topic T)
//
// The whole run is bounded by --timeout (default 60s): past it the program prints what
// it was doing on stderr and exits 3. It exits 1 if go-feature-flag did not hand every
// event to the exporter successfully before exit.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	ffclient "github.com/thomaspoignant/go-feature-flag"
	"github.com/thomaspoignant/go-feature-flag/exporter"
	"github.com/thomaspoignant/go-feature-flag/exporter/kafkaexporter"
	"github.com/thomaspoignant/go-feature-flag/exporter/webhookexporter"
	"github.com/thomaspoignant/go-feature-flag/ffcontext"
	"github.com/thomaspoignant/go-feature-flag/retriever/fileretriever"
	"github.com/thomaspoignant/go-feature-flag/utils/fflog"
)

// goffVersion must match the require line of go.mod.
const goffVersion = "v1.44.0"

// defaultFlags is written to a temp dir unless --flags is given. A --flags file must
// define the same four keys with the same types (bool / string).
const defaultFlags = `# flagtally goff-client flag file (go-feature-flag YAML format)
# bool flag, percentage rollout, no version field (events carry "version": "")
new-checkout:
  variations:
    enabled: true
    disabled: false
  defaultRule:
    percentage:
      enabled: 30
      disabled: 70

# string flag, 3 variations, targeting rule on the "plan" attribute, then a split
banner-color:
  variations:
    red: "red"
    green: "green"
    blue: "blue"
  targeting:
    - name: premium-users
      query: plan eq "premium"
      variation: blue
  defaultRule:
    percentage:
      red: 50
      green: 50
  version: "3"

# disabled flag: evaluations return the SDK default, variation "SdkDefault"
legacy-search:
  variations:
    enabled: true
    disabled: false
  defaultRule:
    variation: enabled
  disable: true

# string flag with a version field and a static default rule
api-tier:
  variations:
    standard: "standard"
    turbo: "turbo"
  defaultRule:
    variation: standard
  targeting:
    - query: plan eq "pro"
      variation: turbo
  version: "v7.1.0"
`

type flagSpec struct {
	key    string
	isBool bool
	defB   bool
	defS   string
}

var flagsToEvaluate = []flagSpec{
	{key: "new-checkout", isBool: true, defB: false},
	{key: "banner-color", defS: "none"},
	{key: "legacy-search", isBool: true, defB: false},
	{key: "api-tier", defS: "none"},
}

var plans = []string{"free", "pro", "premium"}

// countingExporter wraps go-feature-flag's own exporter without changing what it sends:
// it only counts the events of each successful Export call, so the program can tell
// whether every event really left before it exits.
type countingExporter struct {
	inner    exporter.Exporter
	ok       atomic.Int64
	failures atomic.Int64
	calls    atomic.Int64
	verbose  bool
}

func (c *countingExporter) IsBulk() bool { return c.inner.IsBulk() }

func (c *countingExporter) Export(ctx context.Context, l *fflog.FFLogger, ev []exporter.ExportableEvent) error {
	n := c.calls.Add(1)
	err := c.inner.Export(ctx, l, ev)
	if err != nil {
		c.failures.Add(1)
		detail := ""
		var perrs sarama.ProducerErrors
		if errors.As(err, &perrs) && len(perrs) > 0 {
			detail = fmt.Sprintf(" (first: %v)", perrs[0].Err)
		}
		fmt.Fprintf(os.Stderr, "goff-client: export call %d (%d events) failed: %v%s\n", n, len(ev), err, detail)
		return err
	}
	c.ok.Add(int64(len(ev)))
	if c.verbose {
		fmt.Fprintf(os.Stderr, "goff-client: export call %d: %d events ok\n", n, len(ev))
	}
	return nil
}

var phase atomic.Value

func setPhase(s string) { phase.Store(s) }

func fail(code int, format string, a ...any) {
	fmt.Fprintf(os.Stderr, "goff-client: "+format+"\n", a...)
	os.Exit(code)
}

func main() {
	flagsFile := flag.String("flags", "", "go-feature-flag YAML flag file (default: a built-in one written to a temp dir)")
	evaluations := flag.Int("evaluations", 3000, "number of evaluations")
	seed := flag.Uint64("seed", 1, "seed of the pseudo-random evaluation sequence")
	users := flag.Int("users", 50, "number of distinct users (user-0 .. user-<U-1>)")
	anonEvery := flag.Int("anonymous-every", 0, "if K>0, every user i with i%K==K-1 gets anonymous=true (contextKind anonymousUser)")
	webhook := flag.String("webhook", "", "webhook exporter: POST events to this URL")
	secret := flag.String("secret", "", "webhook: sign bodies with this secret (X-Hub-Signature-256)")
	auth := flag.String("auth", "", "webhook: send header 'Authorization: Bearer KEY'")
	brokers := flag.String("kafka-brokers", "", "Kafka exporter: comma-separated HOST:PORT bootstrap list (plaintext)")
	topic := flag.String("kafka-topic", "", "Kafka exporter: topic")
	flushInterval := flag.Duration("flush-interval", 200*time.Millisecond, "DataExporter.FlushInterval")
	maxEvents := flag.Int64("max-events", 1000, "DataExporter.MaxEventInMemory (a bulk exporter flushes when this many are pending)")
	timeout := flag.Duration("timeout", 60*time.Second, "bound on the whole run")
	verbose := flag.Bool("verbose", false, "log go-feature-flag (debug) and each export call on stderr")
	flag.Parse()

	setPhase("starting")
	start := time.Now()
	var countingRef atomic.Pointer[countingExporter]
	time.AfterFunc(*timeout, func() {
		if c := countingRef.Load(); c != nil {
			fail(3, "timed out after %s while %v (%d events exported so far, %d failed export calls)",
				*timeout, phase.Load(), c.ok.Load(), c.failures.Load())
		}
		fail(3, "timed out after %s while %v", *timeout, phase.Load())
	})

	if flag.NArg() != 0 {
		fail(2, "unexpected arguments: %v", flag.Args())
	}
	if *evaluations < 0 || *users <= 0 {
		fail(2, "--evaluations must be >= 0 and --users > 0")
	}
	var inner exporter.Exporter
	var exporterName string
	switch {
	case *webhook != "" && (*brokers != "" || *topic != ""):
		fail(2, "give exactly one exporter: --webhook URL or --kafka-brokers/--kafka-topic")
	case *webhook != "":
		exporterName = "webhook"
		w := &webhookexporter.Exporter{EndpointURL: *webhook, Secret: *secret}
		if *auth != "" {
			w.Headers = map[string][]string{"Authorization": {"Bearer " + *auth}}
		}
		inner = w
	case *brokers != "" || *topic != "":
		if *brokers == "" || *topic == "" {
			fail(2, "the Kafka exporter needs both --kafka-brokers and --kafka-topic")
		}
		exporterName = "kafka"
		// Settings.Config left nil: the exporter builds go-feature-flag's default
		// sarama config (sarama.NewConfig() + Producer.Return.Successes), plaintext.
		inner = &kafkaexporter.Exporter{Settings: kafkaexporter.Settings{
			Topic:     *topic,
			Addresses: strings.Split(*brokers, ","),
		}}
	default:
		fail(2, "give exactly one exporter: --webhook URL or --kafka-brokers HOST:PORT --kafka-topic T")
	}
	if (*secret != "" || *auth != "") && exporterName != "webhook" {
		fail(2, "--secret and --auth only apply to --webhook")
	}
	counting := &countingExporter{inner: inner, verbose: *verbose}
	countingRef.Store(counting)

	path := *flagsFile
	if path == "" {
		dir, err := os.MkdirTemp("", "goff-client-")
		if err != nil {
			fail(1, "temp dir: %v", err)
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "flags.goff.yaml")
		if err := os.WriteFile(path, []byte(defaultFlags), 0o644); err != nil {
			fail(1, "writing the flag file: %v", err)
		}
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	setPhase("initialising go-feature-flag")
	goff, err := ffclient.New(ffclient.Config{
		PollingInterval:       10 * time.Minute,
		DisableNotifierOnInit: true,
		LeveledLogger:         logger,
		Context:               context.Background(),
		Retriever:             &fileretriever.Retriever{Path: path},
		FileFormat:            "yaml",
		DataExporter: ffclient.DataExporter{
			FlushInterval:    *flushInterval,
			MaxEventInMemory: *maxEvents,
			Exporter:         counting,
		},
	})
	if err != nil {
		fail(1, "go-feature-flag init: %v", err)
	}

	setPhase("evaluating")
	rng := rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15))
	perFlag := map[string]int64{}
	perFlagVariation := map[string]int64{}
	var expected, evalErrors int64
	for i := 0; i < *evaluations; i++ {
		f := flagsToEvaluate[rng.IntN(len(flagsToEvaluate))]
		u := rng.IntN(*users)
		ctx := ffcontext.NewEvaluationContext(fmt.Sprintf("user-%d", u))
		ctx.AddCustomAttribute("plan", plans[u%len(plans)])
		if *anonEvery > 0 && u%*anonEvery == *anonEvery-1 {
			ctx.AddCustomAttribute("anonymous", true)
		}
		var variation string
		var track bool
		var err error
		if f.isBool {
			r, e := goff.BoolVariationDetails(f.key, ctx, f.defB)
			variation, track, err = r.VariationType, r.TrackEvents, e
		} else {
			r, e := goff.StringVariationDetails(f.key, ctx, f.defS)
			variation, track, err = r.VariationType, r.TrackEvents, e
		}
		if err != nil {
			evalErrors++
			if evalErrors <= 5 {
				fmt.Fprintf(os.Stderr, "goff-client: evaluating %s: %v (counted if the SDK tracks it)\n", f.key, err)
			}
		}
		if track {
			expected++
			perFlag[f.key]++
			perFlagVariation[f.key+"/"+variation]++
		}
	}

	// Let go-feature-flag's own flushes (ticker / MaxEventInMemory, and its retry of a
	// failed batch at the next flush) deliver everything, then Close (which waits for
	// the evaluation goroutines and flushes once more).
	setPhase(fmt.Sprintf("waiting for the %s exporter to deliver %d events", exporterName, expected))
	deadline := start.Add(*timeout - 5*time.Second)
	for counting.ok.Load() < expected && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	setPhase("closing go-feature-flag (final flush)")
	goff.Close()

	delivered := counting.ok.Load()
	if delivered != expected {
		fail(1, "go-feature-flag exported %d of %d events (%d failed export calls)", delivered, expected, counting.failures.Load())
	}
	if counting.failures.Load() > 0 {
		fmt.Fprintf(os.Stderr, "goff-client: %d export calls failed and were retried by go-feature-flag; all %d events delivered (a failed batch is re-sent whole)\n",
			counting.failures.Load(), expected)
	}

	out := map[string]any{
		"goff":               goffVersion,
		"evaluations":        *evaluations,
		"per_flag":           perFlag,
		"per_flag_variation": perFlagVariation,
		"exporter":           exporterName,
	}
	b, err := json.Marshal(out)
	if err != nil {
		fail(1, "json: %v", err)
	}
	fmt.Println(string(b))
}
