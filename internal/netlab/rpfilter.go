package netlab

import (
	"fmt"
)

// StrictRPFilter turns on strict reverse-path filtering (rp_filter=1) in
// the namespace: for all, for default (devices created later) and for
// every device it has now, since the kernel applies the larger of "all"
// and the device's own value. A distribution's default on a node.
func (n *NS) StrictRPFilter() error {
	links, err := n.nl.LinkList()
	if err != nil {
		return fmt.Errorf("devices of %s: %w", n.Name, err)
	}
	keys := []string{"all", "default"}
	for _, l := range links {
		keys = append(keys, l.Attrs().Name)
	}
	for _, k := range keys {
		if err := n.Sysctl("ipv4/conf/"+k+"/rp_filter", "1"); err != nil {
			return fmt.Errorf("rp_filter of %s in %s: %w", k, n.Name, err)
		}
	}
	return nil
}
