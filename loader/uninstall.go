package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/sluice-lb/sluice/bpf"
)

// Uninstall detaches what the agent that pinned under pinDir attached in
// the calling network namespace, and removes its pins. Programs of other
// agents (other pin dirs) are recognised by the maps they use and left
// alone.
func Uninstall(pinDir string, log *slog.Logger) error {
	if _, err := os.Stat(pinDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var ours ebpf.MapID
	if m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, bpf.SluiceMapSluiceCounters), nil); err == nil {
		if info, err := m.Info(); err == nil {
			ours, _ = info.ID()
		}
		m.Close()
	}

	linkFiles, _ := filepath.Glob(filepath.Join(pinDir, "links", "*"))
	for _, f := range linkFiles {
		l, err := link.LoadPinnedLink(f, nil)
		if err != nil {
			log.Warn("unreadable link pin: removing it", "pin", f, "err", err)
			_ = os.Remove(f)
			continue
		}
		err = l.Unpin()
		l.Close() // the last reference: the program is detached
		if err != nil {
			return fmt.Errorf("unpin %s: %w", f, err)
		}
		log.Info("detached", "link", filepath.Base(f))
	}

	if ours != 0 {
		if err := removeTCFilters(ours, log); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(pinDir); err != nil {
		return fmt.Errorf("remove %s: %w", pinDir, err)
	}
	return nil
}

// removeTCFilters deletes every cls_bpf filter, ingress or egress, whose
// program uses the map with id ours.
func removeTCFilters(ours ebpf.MapID, log *slog.Logger) error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		var filters []netlink.Filter
		for _, h := range hooks {
			fs, err := netlink.FilterList(l, h.tcPar)
			if err == nil {
				filters = append(filters, fs...)
			}
		}
		for _, f := range filters {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || !programUsesMap(bf.Id, ours) {
				continue
			}
			if err := netlink.FilterDel(bf); err != nil {
				return fmt.Errorf("remove tc filter from %s: %w", l.Attrs().Name, err)
			}
			log.Info("detached", "tc-filter", l.Attrs().Name)
		}
	}
	return nil
}

func programUsesMap(progID int, id ebpf.MapID) bool {
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(progID))
	if err != nil {
		return false
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return false
	}
	ids, _ := info.MapIDs()
	return slices.Contains(ids, id)
}
