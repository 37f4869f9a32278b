package loader

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// lb4_services, same name, same sizes: the byte after a master entry's
// flags was padding and is now its kind (enum lb_frontend_kind). Every
// entry written before was a ClusterIP's, whose kind is 0, the padding's
// value: the entries are carried over as they are, so a restarted agent's
// datapath keeps serving every Service until the first sync rewrites them.

func checkLB4ServicesPad(env migrationEnv, old *ebpf.Map) error {
	ms := env.spec.Maps["lb4_services"]
	if old.Type() != ms.Type || old.KeySize() != ms.KeySize || old.ValueSize() != ms.ValueSize {
		return fmt.Errorf("type %s, key size %d, value size %d", old.Type(), old.KeySize(), old.ValueSize())
	}
	return nil
}

// copyEntries copies every entry byte for byte.
func copyEntries(_ migrationEnv, old, fresh *ebpf.Map) (moved, skipped int, err error) {
	var key, val []byte
	it := old.Iterate()
	for it.Next(&key, &val) {
		if moved >= int(fresh.MaxEntries()) {
			skipped++
			continue
		}
		if err := fresh.Put(key, val); err != nil {
			return moved, skipped, fmt.Errorf("copy entry: %w", err)
		}
		moved++
	}
	return moved, skipped, it.Err()
}
