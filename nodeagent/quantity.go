package nodeagent

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// errQuantity is returned for a quantity that is not in Kubernetes' syntax.
var errQuantity = errors.New("not a quantity")

// quantitySuffixes are Kubernetes' quantity suffixes and their factors.
var quantitySuffixes = []struct {
	suffix string
	num    int64 // factor = num / den
	den    int64
}{
	{"Ki", 1 << 10, 1}, {"Mi", 1 << 20, 1}, {"Gi", 1 << 30, 1}, {"Ti", 1 << 40, 1}, {"Pi", 1 << 50, 1}, {"Ei", 1 << 60, 1},
	{"k", 1e3, 1}, {"M", 1e6, 1}, {"G", 1e9, 1}, {"T", 1e12, 1}, {"P", 1e15, 1}, {"E", 1e18, 1},
	{"m", 1, 1000},
}

// parseQuantity parses a Kubernetes quantity ("100Mi", "1.5G", "250m",
// "2") and returns it multiplied by scale (1000 for millis), rounded up,
// as kubelet's Quantity.Value and MilliValue do.
func parseQuantity(s string, scale int64) (int64, error) {
	s = strings.TrimSpace(s)
	num, factor := s, big.NewRat(1, 1)
	for _, q := range quantitySuffixes {
		if n, ok := strings.CutSuffix(s, q.suffix); ok {
			num, factor = n, big.NewRat(q.num, q.den)
			break
		}
	}
	if num == "" || strings.Contains(num, "/") {
		return 0, fmt.Errorf("%w: %q", errQuantity, s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok || r.Sign() < 0 {
		return 0, fmt.Errorf("%w: %q", errQuantity, s)
	}
	r.Mul(r, factor)
	r.Mul(r, big.NewRat(scale, 1))
	// Round up, as resource.Quantity does.
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if m.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() || q.Int64() > math.MaxInt64/2 {
		return 0, fmt.Errorf("%w: %q is too large", errQuantity, s)
	}
	return q.Int64(), nil
}

// ParseResourceAmounts parses a reserve in kubelet's --system-reserved
// syntax: "cpu=100m,memory=256Mi,ephemeral-storage=1Gi". An empty string
// is no reserve.
func ParseResourceAmounts(s string) (bridge.ResourceAmounts, error) {
	var r bridge.ResourceAmounts
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return r, fmt.Errorf("%q: want resource=quantity", kv)
		}
		var err error
		switch k {
		case "cpu":
			r.CPUMilli, err = parseQuantity(v, 1000)
		case "memory":
			r.MemoryBytes, err = parseQuantity(v, 1)
		case "ephemeral-storage":
			r.EphemeralStorageBytes, err = parseQuantity(v, 1)
		default:
			return r, fmt.Errorf("%q: unknown resource (cpu, memory, ephemeral-storage)", k)
		}
		if err != nil {
			return r, fmt.Errorf("%s: %w", k, err)
		}
	}
	return r, nil
}
