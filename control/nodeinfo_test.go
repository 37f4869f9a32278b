package control

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNodeInfoOf(t *testing.T) {
	addrs := []corev1.NodeAddress{
		{Type: corev1.NodeHostName, Address: "n1"},
		{Type: corev1.NodeInternalIP, Address: "192.168.0.10"},
		{Type: corev1.NodeExternalIP, Address: "203.0.113.1"},
		{Type: corev1.NodeInternalIP, Address: "10.0.0.10"},
	}
	cases := []struct {
		name string
		spec corev1.NodeSpec
		want string
	}{
		{"podCIDRs", corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24", "fd00::/64"}}, "10.244.1.0/24,fd00::/64"},
		{"podCIDR alone", corev1.NodeSpec{PodCIDR: "10.244.2.0/24"}, "10.244.2.0/24"},
		{"none", corev1.NodeSpec{}, ""},
	}
	for _, c := range cases {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{corev1.LabelTopologyZone: "z"}},
			Spec: c.spec, Status: corev1.NodeStatus{Addresses: addrs}}
		want := NodeInfo{Name: "n1", Zone: "z", InternalIPs: "192.168.0.10,10.0.0.10", PodCIDRs: c.want}
		if got := NodeInfoOf(n); got != want {
			t.Errorf("%s: %+v, want %+v", c.name, got, want)
		}
	}
}
