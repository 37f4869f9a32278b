package testenv

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// KernelVersion returns the running kernel's major and minor version.
// Only tests read it, to know which features the kernel must have; sluice
// itself probes features.
func KernelVersion() (major, minor int) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return 0, 0
	}
	return parseVersion(unix.ByteSliceToString(u.Release[:]))
}

func parseVersion(s string) (major, minor int) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return 0, 0
	}
	major, _ = strconv.Atoi(parts[0])
	minor, _ = strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return major, minor
}

// KernelAtLeast reports whether the kernel is version v ("6.6") or newer.
func KernelAtLeast(v string) bool {
	wantMajor, wantMinor := parseVersion(v + ".0")
	major, minor := KernelVersion()
	return major > wantMajor || (major == wantMajor && minor >= wantMinor)
}

// SkipOnOldKernel skips t, under CI too, when the kernel predates version
// v, which introduced feature: its absence is then expected, not a defect.
// On newer kernels the test runs and must find the feature.
func SkipOnOldKernel(t testing.TB, v, feature string) {
	t.Helper()
	if !KernelAtLeast(v) {
		major, minor := KernelVersion()
		t.Skip(fmt.Sprintf("%s needs kernel %s, this is %d.%d", feature, v, major, minor))
	}
}
