// Package loader loads sluice's datapath into the kernel, pins its maps so
// they outlive the agent, attaches it to devices (TCX where the kernel has
// it, a clsact qdisc with a cls_bpf filter where it does not), and on
// restart adopts the pinned state of the previous agent.
package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// DefaultPinDir is where an agent pins its maps and links unless told
// otherwise. Agents that must coexist use distinct pin dirs.
const DefaultPinDir = DefaultBPFFS + "/sluice"

// AttachMode selects how programs are attached to devices.
type AttachMode string

const (
	AttachAuto AttachMode = "auto" // TCX where the kernel has it, else tc
	AttachTCX  AttachMode = "tcx"
	AttachTC   AttachMode = "tc" // clsact qdisc + cls_bpf filter
)

// Options configure Load.
type Options struct {
	PinDir string
	Attach AttachMode
	// MaxEntries overrides the size of maps by name ("ct4_v3": 1<<20).
	MaxEntries map[string]uint32
	// CTEntries, when not 0, sizes the conntrack table ct4_v3 (entries;
	// a flow takes two): the agent derives it from its memory budget
	// (control/conntrack.SizeTable). A pinned table of another size is
	// migrated.
	CTEntries uint32
	// CTTimeouts are the conntrack lifetimes in seconds, by enum
	// ct_timeout, written into sluice_ct_timeouts at every load (a 0
	// keeps the datapath's default).
	CTTimeouts [bpf.SluiceCtTimeoutCT_TIMEOUT_MAX]uint32
	// ServiceCIDR, when valid, makes packets to unallocated addresses in
	// it drop (rule 17).
	ServiceCIDR netip.Prefix
	// TC are the clsact filters' priorities and handle (tc mode); zero
	// fields take the defaults (DefaultTCIngressPriority and the others).
	TC TCFilters
	// RejectRate and RejectBurst bound the ICMP errors REJECT sends, per
	// CPU: errors per second, and how many may go at once after a quiet
	// spell. 0 keeps the datapath's default (1000/s, burst 50: the
	// kernel's icmp_msgs_per_sec and icmp_msgs_burst).
	RejectRate, RejectBurst uint32
	// CgroupRoot, when set, is the cgroup v2 directory the socket
	// programs (bpf/sock.c) are attached to, so that the node's own
	// processes under it reach frontends as pods do; the agent gives the
	// root of the unified hierarchy. Empty: none are attached, and those
	// a previous agent attached are detached. A root that is not cgroup
	// v2, or a kernel that refuses the programs, leaves the tc datapath
	// serving alone (logged; SocketLB says why).
	CgroupRoot string
	// Sock is what the socket programs translate besides the node's own
	// sockets (the zero value: its Pods' TCP connects too).
	Sock SockOptions
	Log  *slog.Logger
}

// Datapath is the loaded datapath of one agent.
type Datapath struct {
	Objs bpf.SluiceObjects
	Maps *maps.Datapath

	pinDir string
	mode   AttachMode
	tc     TCFilters
	log    *slog.Logger
	// owner recognises this agent's programs, and its predecessor's,
	// among the programs attached to a device.
	owner       *owner
	pinsAdopted bool
	// The socket programs, when attached to sockRoot; sockErr says why
	// they are not.
	sock     *bpf.SluiceSockObjects
	sockRoot string
	sockErr  error
}

// Load loads the datapath, adopting the maps pinned under opts.PinDir if
// they are compatible.
func Load(opts Options) (*Datapath, error) {
	if opts.PinDir == "" {
		opts.PinDir = DefaultPinDir
	}
	if opts.Attach == "" {
		opts.Attach = AttachAuto
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, whose default
	// (64 KiB, 8 MiB on newer systems) is far below what the maps take.
	// Newer kernels charge the memory cgroup: this is then a no-op.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("lift RLIMIT_MEMLOCK: %w: kernels before 5.11 charge BPF maps to it, and this one "+
			"refused a map under it; the agent needs CAP_SYS_RESOURCE (besides CAP_BPF or root), "+
			"or to be started without the limit (ulimit -l unlimited, systemd LimitMEMLOCK=infinity)", err)
	}
	if err := ensureBPFFS(opts.PinDir); err != nil {
		return nil, err
	}
	spec, err := bpf.LoadSluice()
	if err != nil {
		return nil, err
	}
	coarse, err := bpf.UseCoarseClock(spec)
	if err != nil {
		return nil, err
	}
	opts.Log.Debug("conntrack clock", "coarse", coarse)
	for name, n := range opts.MaxEntries {
		ms, ok := spec.Maps[name]
		if !ok {
			return nil, fmt.Errorf("no map named %q to size", name)
		}
		ms.MaxEntries = n
	}
	if opts.CTEntries != 0 {
		spec.Maps[bpf.SluiceMapCt4V3].MaxEntries = opts.CTEntries
	}
	if err := runRenameMigrations(spec, opts.PinDir, opts.Log); err != nil {
		return nil, err
	}
	if err := checkPinnedMaps(spec, opts.PinDir, opts.Log); err != nil {
		return nil, err
	}

	d := &Datapath{pinDir: opts.PinDir, mode: opts.Attach, tc: opts.TC.withDefaults(), log: opts.Log}
	// The programs the previous agent pinned, read before their pins are
	// replaced: their filters are this agent's to replace or remove.
	previous := pinnedProgramIDs(opts.PinDir)
	err = spec.LoadAndAssign(&d.Objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: opts.PinDir},
	})
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return nil, fmt.Errorf("load datapath: verifier: %+v", ve)
	}
	if err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	d.Maps = maps.FromObjects(&d.Objs.SluiceMaps)
	if err := writeLayoutRecord(spec, opts.PinDir); err != nil {
		d.Close()
		return nil, err
	}

	// The programs are pinned too, for bpftool and for the record of what
	// this agent runs. The previous agent's pins are replaced: its
	// programs live on in the attachments until Attach swaps them.
	for name, prog := range map[string]*ebpf.Program{
		bpf.SluiceProgSluiceIngress: d.Objs.SluiceIngress,
		bpf.SluiceProgSluiceEgress:  d.Objs.SluiceEgress,
	} {
		pin := filepath.Join(opts.PinDir, name)
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.Close()
			return nil, fmt.Errorf("replace program pin: %w", err)
		}
		if err := prog.Pin(pin); err != nil {
			d.Close()
			return nil, fmt.Errorf("pin program %s: %w", name, err)
		}
	}

	d.owner = pinnedOwner(opts.PinDir)
	for _, id := range previous {
		d.owner.progs[id] = true
	}

	// Only the service CIDR is the loader's: the node's fields, which a
	// previous agent's control plane wrote into the adopted map, keep
	// serving SNAT and two-scope frontends until this agent's first sync
	// rewrites them (control.Reconciler.SetNode).
	cfg, err := d.Maps.Config.Lookup(0)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("read datapath config: %w", err)
	}
	cfg.ServiceCidr4, cfg.ServiceCidr4Mask = 0, 0
	if p := opts.ServiceCIDR.Masked(); p.IsValid() && p.Addr().Is4() {
		cfg.ServiceCidr4 = maps.Addr4(p.Addr())
		cfg.ServiceCidr4Mask = maps.Addr4(prefixMask4(p.Bits()))
	}
	if err := d.Maps.Config.Put(0, cfg); err != nil {
		d.Close()
		return nil, fmt.Errorf("write datapath config: %w", err)
	}
	rl := bpf.SluiceRejectRatelimit{Rate: opts.RejectRate, Burst: opts.RejectBurst}
	if err := d.Objs.SluiceRejectRate.Put(uint32(0), rl); err != nil {
		d.Close()
		return nil, fmt.Errorf("write REJECT rate: %w", err)
	}
	if err := d.writeCTTimeouts(opts.CTTimeouts); err != nil {
		d.Close()
		return nil, err
	}
	d.startSockets(opts.CgroupRoot, opts.Sock)
	return d, nil
}

// startSockets attaches the socket programs to root, or detaches them when
// root is empty. Socket-level load balancing is an addition to the tc
// datapath: when it cannot be had, the agent says why and serves on.
func (d *Datapath) startSockets(root string, so SockOptions) {
	if root == "" {
		d.sockErr = errors.New("no cgroup root given")
		d.detachSockets()
		return
	}
	if err := d.serveSockets(root, so); err != nil {
		d.sockErr = err
		if d.sock != nil {
			d.sock.Close()
			d.sock = nil
		}
		d.log.Warn("socket-level load balancing unavailable: the node's own processes reach no frontend; pods are served",
			"cgroup-root", root, "err", err)
		return
	}
	d.sockRoot = root
	d.log.Info("socket-level load balancing attached", "cgroup-root", root)
}

// writeCTTimeouts writes every lifetime, so that one dropped from the
// agent's settings goes back to the default instead of keeping the
// previous agent's value.
func (d *Datapath) writeCTTimeouts(secs [bpf.SluiceCtTimeoutCT_TIMEOUT_MAX]uint32) error {
	keys := make([]bpf.SluiceCtTimeout, len(secs))
	for i := range keys {
		keys[i] = bpf.SluiceCtTimeout(i)
	}
	if err := d.Maps.CTTimeouts.PutAll(keys, secs[:]); err != nil {
		return fmt.Errorf("write conntrack timeouts: %w", err)
	}
	return nil
}

func prefixMask4(bits int) netip.Addr {
	var b [4]byte
	for i := range bits {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

// PinDir returns the directory the datapath's objects are pinned under.
func (d *Datapath) PinDir() string { return d.pinDir }

// Close releases this process's handles. Pinned maps and links stay, so
// the datapath keeps serving after the agent exits.
func (d *Datapath) Close() error {
	if d.sock != nil {
		d.sock.Close()
	}
	return d.Objs.Close()
}

func (d *Datapath) linkDir() string { return filepath.Join(d.pinDir, "links") }

// OpenPinnedMaps opens the maps an agent pinned under dir, read-only, for
// inspection. Which maps there are comes from the object; their sizes may
// differ from it (the agent may have resized them), their layout may not.
func OpenPinnedMaps(dir string) (*maps.Datapath, func(), error) {
	m, closeAll, err := openPinnedMaps(dir, true)
	if err != nil {
		return nil, nil, err
	}
	return maps.FromObjects(m), closeAll, nil
}

// OpenPinnedMapsWritable is OpenPinnedMaps for a command that changes what
// the agent pinned (`sluice ct flush`).
func OpenPinnedMapsWritable(dir string) (*maps.Datapath, func(), error) {
	m, closeAll, err := openPinnedMaps(dir, false)
	if err != nil {
		return nil, nil, err
	}
	return maps.FromObjects(m), closeAll, nil
}

// openPinnedMaps opens every map pinned under dir; readOnly handles make
// a process that inspects a datapath unable to change it through them.
func openPinnedMaps(dir string, readOnly bool) (*bpf.SluiceMaps, func(), error) {
	spec, err := bpf.LoadSluice()
	if err != nil {
		return nil, nil, err
	}
	coll := &ebpf.Collection{Maps: map[string]*ebpf.Map{}}
	closeAll := func() {
		for _, m := range coll.Maps {
			m.Close()
		}
	}
	recorded, err := readLayoutRecord(dir)
	if err != nil {
		return nil, nil, err
	}
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		pm, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), &ebpf.LoadPinOptions{ReadOnly: readOnly})
		if err != nil {
			closeAll()
			if errors.Is(err, os.ErrNotExist) {
				return nil, nil, fmt.Errorf("no sluice datapath pinned at %s (is the agent running with this --pin-dir?)", dir)
			}
			return nil, nil, fmt.Errorf("open %s: %w", name, err)
		}
		coll.Maps[name] = pm
		change, err := layoutChange(name, ms, pm, recorded)
		if err != nil {
			change = err.Error()
		} else if !sameLayout(ms, pm) {
			change = "other key or value size, or type"
		}
		if change != "" {
			closeAll()
			return nil, nil, fmt.Errorf("map %s pinned at %s has another layout (made by another sluice version?): %s", name, dir, change)
		}
	}
	var m bpf.SluiceMaps
	if err := coll.Assign(&m); err != nil {
		closeAll()
		return nil, nil, err
	}
	return &m, closeAll, nil
}
