package bpf_test

import (
	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/maps"
)

func lbKeyOf(fe control.Frontend, slot uint16) bpf.SluiceLb4Key {
	return bpf.SluiceLb4Key{Address: maps.Addr4(fe.Addr), Dport: maps.Port(fe.Port), Proto: uint8(fe.Proto), BackendSlot: slot}
}
