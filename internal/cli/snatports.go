package cli

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
)

// portRange is an inclusive range of ports, as --snat-port-range writes
// it: "61000-65535".
type portRange struct{ Min, Max uint16 }

func (r portRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// parsePortRange parses "min-max": two ports within 1-65535, min <= max.
// what names the flag in errors.
func parsePortRange(what, s string) (portRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return portRange{}, fmt.Errorf("%s %q: want two ports, min-max", what, s)
	}
	var ports [2]uint16
	for i, p := range []string{lo, hi} {
		n, err := strconv.ParseUint(strings.TrimSpace(p), 10, 16)
		if err != nil || n == 0 {
			return portRange{}, fmt.Errorf("%s %q: %q is not a port in 1-65535", what, s, p)
		}
		ports[i] = uint16(n)
	}
	if ports[0] > ports[1] {
		return portRange{}, fmt.Errorf("%s %q: the first port is above the second", what, s)
	}
	return portRange{ports[0], ports[1]}, nil
}

// overlaps reports whether r and o share a port.
func (r portRange) overlaps(o portRange) bool { return r.Min <= o.Max && o.Min <= r.Max }

// localPortRange is where the kernel keeps the ephemeral ports the node's
// own connections pick from; being under /proc/sys/net it is the reading
// process's network namespace's, the agent's.
const localPortRange = "/proc/sys/net/ipv4/ip_local_port_range"

// warnLocalPortOverlap warns when the SNAT ports overlap the node's
// ephemeral ports (read from path, "min<TAB>max"): a connection of the node's
// own may then pick a port a SNATed flow holds, or the other way round,
// and its replies go to the wrong one. It reports whether it warned.
func warnLocalPortOverlap(log *slog.Logger, snat portRange, path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		log.Debug("cannot read the node's ephemeral port range", "path", path, "err", err)
		return false
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		log.Debug("unexpected ephemeral port range", "path", path, "content", string(data))
		return false
	}
	local, err := parsePortRange(path, f[0]+"-"+f[1])
	if err != nil {
		log.Debug("unexpected ephemeral port range", "err", err)
		return false
	}
	if !snat.overlaps(local) {
		return false
	}
	log.Warn("--snat-port-range overlaps the node's ephemeral ports (net.ipv4.ip_local_port_range): "+
		"the node's own connections may pick ports SNATed flows use; narrow one of them",
		"snat-port-range", snat.String(), "ip_local_port_range", local.String())
	return true
}
