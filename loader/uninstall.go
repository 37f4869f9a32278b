package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// Uninstall detaches what the agent that pinned under pinDir attached in
// the calling network namespace, and removes its pins. Programs of other
// agents (other pin dirs) are recognised by the maps they use and left
// alone, and so is every program that is not sluice's.
func Uninstall(pinDir string, log *slog.Logger) error {
	if _, err := os.Stat(pinDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	// Whose a tc filter is, told by its program, read before the pins go.
	ours := pinnedOwner(pinDir)

	linkFiles, _ := filepath.Glob(filepath.Join(pinDir, "links", "*"))
	for _, f := range linkFiles {
		l, err := link.LoadPinnedLink(f, nil)
		if err != nil {
			log.Warn("unreadable link pin: removing it", "pin", f, "err", err)
			_ = os.Remove(f)
			continue
		}
		err = dropLink(l)
		l.Close() // the last reference: the program is detached
		if err != nil {
			return fmt.Errorf("unpin %s: %w", f, err)
		}
		log.Info("detached", "link", filepath.Base(f))
	}

	if err := removeTCFilters(ours, log); err != nil {
		return err
	}
	if err := os.RemoveAll(pinDir); err != nil {
		return fmt.Errorf("remove %s: %w", pinDir, err)
	}
	return nil
}

// removeTCFilters deletes every cls_bpf filter, ingress or egress, whose
// program is ours; a filter of another program stays, whatever its
// priority and handle.
func removeTCFilters(ours *owner, log *slog.Logger) error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		for _, h := range hooks {
			n, err := removeOwnFilters(ours, l.Attrs().Index, h)
			if err != nil {
				return fmt.Errorf("%s: %w", l.Attrs().Name, err)
			}
			if n > 0 {
				log.Info("detached", "tc-filter", l.Attrs().Name, "hook", h.name)
			}
		}
	}
	return nil
}
