package loader

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// A map's key and value sizes say how many bytes its entries have, not what
// they mean: a field renamed, moved or retyped within the same size passes
// every size check and is then misread. The BTF a map was created with
// names its key and value types; layout compares those with the spec's,
// member by member.

// layout describes a BTF type as far as it fixes the meaning of its bytes:
// names, sizes and, for a struct or union, every member's name, offset and
// layout in turn. Typedef names are kept (__be32 and __u32 have the same
// size, not the same byte order); qualifiers are looked through. Enums are
// described by name and size, not values: appending a value (a new drop
// reason) changes no existing entry's meaning.
func layout(t btf.Type) string {
	var b strings.Builder
	describe(&b, t, 0)
	return b.String()
}

func describe(b *strings.Builder, t btf.Type, depth int) {
	if depth > 8 { // deeper than any datapath type: a cycle
		b.WriteString("...")
		return
	}
	switch t := t.(type) {
	case *btf.Typedef:
		fmt.Fprintf(b, "%s=", t.Name)
		describe(b, t.Type, depth+1)
	case *btf.Const:
		describe(b, t.Type, depth+1)
	case *btf.Volatile:
		describe(b, t.Type, depth+1)
	case *btf.Restrict:
		describe(b, t.Type, depth+1)
	case *btf.Int:
		fmt.Fprintf(b, "%s(%d)", t.Name, t.Size)
	case *btf.Enum:
		fmt.Fprintf(b, "enum %s(%d)", t.Name, t.Size)
	case *btf.Pointer:
		b.WriteString("*")
	case *btf.Array:
		fmt.Fprintf(b, "[%d]", t.Nelems)
		describe(b, t.Type, depth+1)
	case *btf.Struct:
		composite(b, "struct", t.Name, t.Size, t.Members, depth)
	case *btf.Union:
		composite(b, "union", t.Name, t.Size, t.Members, depth)
	default:
		fmt.Fprintf(b, "%T", t)
	}
}

func composite(b *strings.Builder, kind, name string, size uint32, members []btf.Member, depth int) {
	fmt.Fprintf(b, "%s %s(%d){", kind, name, size)
	for i, m := range members {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(b, "%s@%d", m.Name, m.Offset/8)
		if m.BitfieldSize != 0 {
			fmt.Fprintf(b, ":%d", m.BitfieldSize)
		}
		b.WriteString(" ")
		describe(b, m.Type, depth+1)
	}
	b.WriteString("}")
}

// layoutOf is how a map's key and value are recorded and compared.
func layoutOf(key, value btf.Type) string {
	return "key " + layout(key) + "; value " + layout(value)
}

// layoutChange compares the key and value types of a pinned map with the
// spec's, from the BTF the map was created with; where this process may
// not read that BTF (the agent has CAP_BPF, not CAP_SYS_ADMIN), from the
// layout recorded when it was pinned (recorded, by map name; see
// layoutrecord.go). It returns "" when they agree, or when there is
// nothing to compare (a map made without BTF and never recorded): sizes
// are then all there is to judge by.
func layoutChange(name string, spec *ebpf.MapSpec, m *ebpf.Map, recorded map[string]string) (string, error) {
	if spec.Key == nil || spec.Value == nil {
		return "", nil
	}
	want := layoutOf(spec.Key, spec.Value)
	key, val, err := pinnedKeyValue(m)
	var got string
	switch {
	case errors.Is(err, errBTFDenied):
		got = recorded[name]
		if len(want) > layoutValueLen {
			want = want[:layoutValueLen] // as it was recorded
		}
	case err != nil:
		return "", err
	case key != nil && val != nil:
		got = layoutOf(key, val)
	}
	if got == "" || got == want {
		return "", nil
	}
	return fmt.Sprintf("%s, want %s", got, want), nil
}

// errBTFDenied: the map has BTF, but reading it (BPF_BTF_GET_FD_BY_ID)
// takes CAP_SYS_ADMIN, which this process lacks.
var errBTFDenied = errors.New("reading a map's BTF needs CAP_SYS_ADMIN")

// mapInfoBTF is the start of the kernel's struct bpf_map_info (uapi
// linux/bpf.h) up to the BTF ids of key and value, which cilium/ebpf's
// MapInfo does not expose. The kernel fills as much as it is given.
type mapInfoBTF struct {
	Type, ID, KeySize, ValueSize, MaxEntries, MapFlags uint32
	Name                                               [unix.BPF_OBJ_NAME_LEN]byte
	Ifindex, BTFVmlinuxValueTypeID                     uint32
	NetnsDev, NetnsIno                                 uint64
	BTFID, BTFKeyTypeID, BTFValueTypeID                uint32
	_                                                  uint32
}

// pinnedKeyValue returns the key and value types m was created with, nil
// when it was created without BTF.
func pinnedKeyValue(m *ebpf.Map) (key, value btf.Type, err error) {
	var info mapInfoBTF
	attr := struct {
		fd      uint32
		infoLen uint32
		info    uint64
	}{uint32(m.FD()), uint32(unsafe.Sizeof(info)), uint64(uintptr(unsafe.Pointer(&info)))}
	if _, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD,
		uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr)); errno != 0 {
		return nil, nil, fmt.Errorf("map info: %w", errno)
	}
	if info.BTFID == 0 || info.BTFKeyTypeID == 0 || info.BTFValueTypeID == 0 {
		return nil, nil, nil
	}
	h, err := btf.NewHandleFromID(btf.ID(info.BTFID))
	if errors.Is(err, unix.EPERM) {
		return nil, nil, errBTFDenied
	}
	if err != nil {
		return nil, nil, fmt.Errorf("map BTF: %w", err)
	}
	defer h.Close()
	s, err := h.Spec(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("map BTF: %w", err)
	}
	if key, err = s.TypeByID(btf.TypeID(info.BTFKeyTypeID)); err != nil {
		return nil, nil, fmt.Errorf("map key type: %w", err)
	}
	if value, err = s.TypeByID(btf.TypeID(info.BTFValueTypeID)); err != nil {
		return nil, nil, fmt.Errorf("map value type: %w", err)
	}
	return key, value, nil
}
