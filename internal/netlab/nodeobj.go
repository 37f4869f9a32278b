package netlab

import (
	"fmt"
	"strings"
)

// NodeManifest is the cluster's Node objects as a manifest stream: each
// node's name, InternalIP (its underlay address) and pod CIDR, what an API
// server would say of the nodes.
func (c *Cluster) NodeManifest() string {
	var b strings.Builder
	for i, n := range c.Nodes {
		if i > 0 {
			b.WriteString("---\n")
		}
		fmt.Fprintf(&b, `apiVersion: v1
kind: Node
metadata: {name: %s}
spec:
  podCIDR: %s
  podCIDRs: [%s]
status:
  addresses:
  - {type: InternalIP, address: %s}
  - {type: Hostname, address: %s}
`, n.Name, n.PodCIDR, n.PodCIDR, n.IP, n.Name)
	}
	return b.String()
}
