package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// Output: json is protojson of the API's messages with every field present
// (a script need not know proto3's defaults), re-indented so that the
// bytes are stable; yaml is the same document in YAML. Tables are for
// people and may change between releases.

var jsonOptions = protojson.MarshalOptions{EmitUnpopulated: true}

// encode writes m as JSON (indented, or one line when compact) or YAML.
func encode(w io.Writer, m proto.Message, format string, compact bool) error {
	raw, err := jsonOptions.Marshal(m)
	if err != nil {
		return err
	}
	return encodeJSON(w, raw, format, compact)
}

// encodeJSON writes a JSON document in the chosen format. protojson's
// spacing varies on purpose; Compact and Indent make it one form.
func encodeJSON(w io.Writer, raw []byte, format string, compact bool) error {
	var buf bytes.Buffer
	switch {
	case format == "yaml":
		y, err := yaml.JSONToYAML(raw)
		if err != nil {
			return err
		}
		if compact { // one document of a stream
			buf.WriteString("---\n")
		}
		buf.Write(y)
	case compact:
		if err := json.Compact(&buf, raw); err != nil {
			return err
		}
		buf.WriteByte('\n')
	default:
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// emit writes m in the chosen format; table renders it for people.
func (a *app) emit(m proto.Message, table func(w io.Writer)) error {
	if a.output != "table" {
		return encode(a.stdout, m, a.output, false)
	}
	tw := newTable(a.stdout)
	table(tw)
	return tw.Flush()
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes one tab-separated table row.
func row(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	io.WriteString(w, "\n")
}

// size renders a byte count for people: "12 B", "1.5 MiB".
func size(n int64) string {
	if n < 0 {
		return "-"
	}
	return humanize.IBytes(uint64(n))
}

// age renders how long ago t was, kubectl style: "42s", "5m", "3h", "2d".
func age(t *timestamppb.Timestamp, now time.Time) string {
	if t == nil || !t.IsValid() || t.AsTime().IsZero() {
		return "-"
	}
	return shortDuration(now.Sub(t.AsTime()))
}

// shortDuration renders d in its largest whole unit, two units below a
// day's worth of them ("1h30m", "2d").
func shortDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < 10*time.Minute:
		if s := int(d/time.Second) % 60; s != 0 {
			return fmt.Sprintf("%dm%ds", int(d/time.Minute), s)
		}
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		if m := int(d/time.Minute) % 60; m != 0 && d < 10*time.Hour {
			return fmt.Sprintf("%dh%dm", int(d/time.Hour), m)
		}
		return fmt.Sprintf("%dh", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

// stamp renders a time for people: RFC 3339 in UTC with milliseconds.
func stamp(t *timestamppb.Timestamp) string {
	if t == nil || !t.IsValid() || t.AsTime().IsZero() {
		return "-"
	}
	return t.AsTime().UTC().Format("2006-01-02T15:04:05.000Z")
}

// stateName renders an object state in lower case: "pinned".
func stateName(s registryv1.ObjectState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "OBJECT_STATE_"))
}

// kindName renders an event kind in upper case: "PINNED".
func kindName(k registryv1.EventKind) string {
	return strings.TrimPrefix(k.String(), "EVENT_KIND_")
}

// labelString renders labels as sorted k=v pairs joined by commas.
func labelString(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

// orDash renders an empty string as "-", so table columns stay aligned.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
