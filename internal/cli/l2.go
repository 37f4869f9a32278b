package cli

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"text/tabwriter"

	"github.com/vishvananda/netlink"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/control/lbipam"
)

const l2Usage = "usage: sluice l2 list [--pin-dir DIR] [-o table|json]"

// l2Row is one announced address, as `sluice l2 list` shows it.
type l2Row struct {
	Device  string `json:"device"`
	Ifindex int    `json:"ifindex"`
	Addr    string `json:"addr"`
	MAC     string `json:"mac"`
}

func runL2(args []string) error {
	dp, closeMaps, output, err := openList(args, "l2", l2Usage)
	if err != nil {
		return err
	}
	defer closeMaps()
	entries, err := control.ReadL2(dp.L2Announce)
	if err != nil {
		return err
	}
	rows := make([]l2Row, 0, len(entries))
	for _, e := range entries {
		name := "?"
		if ifc, err := net.InterfaceByIndex(e.Ifindex); err == nil {
			name = ifc.Name
		}
		rows = append(rows, l2Row{name, e.Ifindex, e.Addr.String(), e.MAC.String()})
	}
	if output == outputJSON {
		return printJSON(rows)
	}
	return writeL2Table(os.Stdout, rows)
}

func writeL2Table(w io.Writer, rows []l2Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tDEVICE\tIFINDEX\tMAC")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Addr, r.Device, r.Ifindex, r.MAC)
	}
	if len(rows) == 0 {
		fmt.Fprintln(tw, "(none: this node announces no load-balancer address)")
	}
	return tw.Flush()
}

// underlayDevice is the device this node announces load-balancer
// addresses on: the one holding its first IPv4 InternalIP that a device
// holds, else (no InternalIP known, or none on a device) the default
// route's device.
func underlayDevice(internalIPs []netip.Addr) (lbipam.Device, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return lbipam.Device{}, fmt.Errorf("list addresses: %w", err)
	}
	index := 0
	for _, want := range internalIPs {
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == want {
				index = a.LinkIndex
				break
			}
		}
		if index != 0 {
			break
		}
	}
	if index == 0 {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return lbipam.Device{}, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.LinkIndex != 0 {
				index = r.LinkIndex
				break
			}
		}
	}
	if index == 0 {
		return lbipam.Device{}, fmt.Errorf("%w %v, and there is no default route", lbipam.ErrNoUnderlay, internalIPs)
	}
	link, err := netlink.LinkByIndex(index)
	if err != nil {
		return lbipam.Device{}, fmt.Errorf("device %d: %w", index, err)
	}
	mac := link.Attrs().HardwareAddr
	if len(mac) != 6 {
		return lbipam.Device{}, fmt.Errorf("device %s has no Ethernet address: cannot answer ARP", link.Attrs().Name)
	}
	return lbipam.Device{Ifindex: index, MAC: mac}, nil
}
