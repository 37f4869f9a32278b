package lbipam

import (
	"bytes"
	"net"
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name string, ready corev1.ConditionStatus, deleting bool, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	if deleting {
		n.DeletionTimestamp = &metav1.Time{}
	}
	return n
}

func lbService(name, ip string, local bool) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}}
	s.Spec.Type = corev1.ServiceTypeLoadBalancer
	if local {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	vip := corev1.LoadBalancerIPModeVIP
	s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: &vip}}
	return s
}

func TestAnnouncements(t *testing.T) {
	pool, _ := ParsePool("10.0.0.0/24")
	yes, no := true, false
	n1, n3 := "n1", "n3"
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "local-x",
		Labels: map[string]string{discoveryv1.LabelServiceName: "local"}},
		Endpoints: []discoveryv1.Endpoint{
			{NodeName: &n1, Conditions: discoveryv1.EndpointConditions{Ready: &yes}},
			{NodeName: &n3, Conditions: discoveryv1.EndpointConditions{Ready: &no}},
		}}
	proxy := lbService("proxy", "10.0.0.9", false)
	mode := corev1.LoadBalancerIPModeProxy
	proxy.Status.LoadBalancer.Ingress[0].IPMode = &mode
	cluster := lbService("cluster", "10.0.0.1", false)
	cluster.Spec.Type = corev1.ServiceTypeClusterIP // status left behind: not announced
	anns, self := Announcements(pool,
		[]*corev1.Service{lbService("a", "10.0.0.2", false), lbService("local", "10.0.0.3", true),
			lbService("outside", "10.9.0.1", false), proxy, cluster},
		[]*corev1.Node{node("n1", corev1.ConditionTrue, false, "192.168.50.11"), node("n2", corev1.ConditionTrue, false, "192.168.50.12"),
			node("n3", corev1.ConditionTrue, false, "192.168.50.13"), node("n4", corev1.ConditionFalse, false, "192.168.50.14"),
			node("n5", corev1.ConditionTrue, true, "192.168.50.15")},
		[]*discoveryv1.EndpointSlice{slice}, "n2")
	want := []Announcement{
		{netip.MustParseAddr("10.0.0.2"), []string{"n1", "n2", "n3"}},
		{netip.MustParseAddr("10.0.0.3"), []string{"n1"}},
	}
	if !reflect.DeepEqual(anns, want) {
		t.Errorf("announcements %v, want %v", anns, want)
	}
	if !reflect.DeepEqual(self, []netip.Addr{netip.MustParseAddr("192.168.50.12")}) {
		t.Errorf("self addresses %v", self)
	}
}

func TestGratuitousARP(t *testing.T) {
	mac := net.HardwareAddr{2, 1, 2, 3, 4, 5}
	got := GratuitousARP(netip.MustParseAddr("10.0.0.7"), mac)
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 1, 2, 3, 4, 5, 0x08, 0x06,
		0, 1, 0x08, 0, 6, 4, 0, 1,
		2, 1, 2, 3, 4, 5, 10, 0, 0, 7,
		0, 0, 0, 0, 0, 0, 10, 0, 0, 7,
	}
	if !bytes.Equal(got, want) {
		t.Errorf("gratuitous ARP\n got %x\nwant %x", got, want)
	}
}
