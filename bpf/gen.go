// Package bpf holds sluice's datapath: the C programs under this directory
// and the Go bindings bpf2go generates from them. The generated *_bpfel.go
// and *_bpfel.o files are committed so that building sluice needs no clang;
// `make generate` rebuilds them with the pinned compiler.
package bpf

// The compiler and strip binaries come from $BPF2GO_CC and $BPF2GO_STRIP
// (the Makefile pins them). Every struct and enum shared with Go is listed
// with -type so its Go declaration is generated, never written by hand.
// struct lb4_affinity cannot be: -type looks names up in BTF, where the map
// of the same name clashes with it. bpf2go generates it all the same
// (SluiceLb4Affinity), as it does the key and value type of every map.
//go:generate go tool bpf2go -target bpfel -go-package bpf -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I./include" -type lb4_key -type lb4_service -type lb4_backend -type lb4_reverse_nat -type ct4_key -type ct4_entry -type ct4_entry_v1 -type counter -type datapath_config -type reason -type lb4_filter -type ct_kind -type ct_flags -type ct_timeout -type ct_timeout_default -type ct_udp_stream -type lb_service_flags -type lb_backend_flags -type lb4_affinity_key -type lb4_affinity_match_key -type frag4_key -type frag4_ports -type ct4_entry_v2 -type snat_default -type lb_frontend_kind -type lb_scope -type lb4_src_range_key -type lb4_sock_revnat_key -type lb4_sock_revnat_entry -type lb4_sock_backend_key -type l2_announce4_key Sluice tc.c

// The benchmark build gives every packet a conntrack key never seen before,
// so BPF_PROG_TEST_RUN's repeat can time the new-flow path. Test-only.
//go:generate go tool bpf2go -target bpfel -go-package bpf -output-suffix _test -no-global-types -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I./include -DSLUICE_BENCH_UNIQUE_FLOWS -DSLUICE_BENCH_KEEP_TTL" SluiceBench tc.c

// The benchmark build of forwarded paths (SNAT): the real programs, except
// that a forwarded packet keeps its TTL, so a repeated skb does not run
// out of it. Test-only.
//go:generate go tool bpf2go -target bpfel -go-package bpf -output-suffix _test -no-global-types -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I./include -DSLUICE_BENCH_KEEP_TTL" SluiceBenchFwd tc.c

// The trace build (`sluice trace`): the same programs with every map write
// compiled out (SLUICE_DRY_RUN, lib/common.h) and the reasons a packet meets
// recorded in globals instead of the counters, loaded against a running
// agent's pinned maps. Shipped in the binary; its types are Sluice's.
//go:generate go tool bpf2go -target bpfel -go-package bpf -no-global-types -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I./include -DSLUICE_DRY_RUN" SluiceTrace tc.c

// The cgroup socket programs (sock.c): socket-level translation of the
// node's own sockets. Their maps are the tc programs' (the loader hands it
// those), so their types are Sluice's.
//go:generate go tool bpf2go -target bpfel -go-package bpf -no-global-types -cflags "-O2 -g -Wall -Werror -mcpu=v3 -nostdinc -I./include" SluiceSock sock.c
