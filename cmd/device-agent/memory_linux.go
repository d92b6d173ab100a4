package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// dropExecutablePages unmaps the resident pages of this process's
// executable that are read-only and unmodified: text and read-only data,
// never the data segment or a mapping the process wrote to (its relocated
// read-only data when built as PIE), whose pages are anonymous memory. It
// returns how many bytes were resident in the mappings it dropped.
func dropExecutablePages() (int64, error) {
	fi, err := os.Stat("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, errors.New("no inode for /proc/self/exe")
	}
	dev := fmt.Sprintf("%02x:%02x", (st.Dev>>8)&0xfff|(st.Dev>>32)&^0xfff, st.Dev&0xff|(st.Dev>>12)&^0xff)
	ino := strconv.FormatUint(st.Ino, 10)
	path, _ := os.Readlink("/proc/self/exe") // on overlayfs the device differs

	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	type mapping struct {
		start, end uintptr
		rss        int64
		clean      bool
	}
	var drop []mapping
	var cur *mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(f[0], "-"); ok && len(f) >= 5 {
			// A mapping: address perms offset dev inode [path].
			cur = nil
			self := f[3] == dev && f[4] == ino || len(f) >= 6 && path != "" && strings.Join(f[5:], " ") == path
			if !self || !strings.HasPrefix(f[1], "r") || strings.ContainsAny(f[1], "ws") {
				continue
			}
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			drop = append(drop, mapping{start: uintptr(start), end: uintptr(end), clean: true})
			cur = &drop[len(drop)-1]
			continue
		}
		if cur == nil || len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Rss:":
			cur.rss = kb << 10
		case "Anonymous:", "Swap:":
			// Pages the process wrote to (copies of the file's), in
			// memory or swapped out: dropping them would lose the
			// writes. Dirty page-cache pages (a freshly written
			// binary) are safe: they stay in the page cache.
			if kb != 0 {
				cur.clean = false
			}
		}
	}
	var dropped int64
	for _, m := range drop {
		if !m.clean {
			continue
		}
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, syscall.MADV_DONTNEED); e != 0 {
			return dropped, fmt.Errorf("madvise %#x-%#x: %w", m.start, m.end, e)
		}
		dropped += m.rss
	}
	return dropped, nil
}

// residentBytes returns this process's resident set size (VmRSS).
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
