package registry

import "unicode/utf8"

// Label rules, as Kubernetes keeps them: small, printable, and safe to put
// in a metric label or a URL.
const (
	MaxLabels        = 64
	MaxLabelKeyLen   = 63
	MaxLabelValueLen = 255
)

// ValidateLabels checks labels against the label rules.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return &LabelError{Reason: "too many labels (at most 64)"}
	}
	for k, v := range labels {
		if k == "" || len(k) > MaxLabelKeyLen {
			return &LabelError{Key: k, Reason: "key must be 1 to 63 characters"}
		}
		for i := range len(k) {
			if !labelKeyByte(k[i]) {
				return &LabelError{Key: k, Reason: "key may hold only a-z A-Z 0-9 . _ / -"}
			}
		}
		if len(v) > MaxLabelValueLen {
			return &LabelError{Key: k, Reason: "value is longer than 255 bytes"}
		}
		if !utf8.ValidString(v) {
			return &LabelError{Key: k, Reason: "value is not valid UTF-8"}
		}
	}
	return nil
}

func labelKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '/' || c == '-'
}
