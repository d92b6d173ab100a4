package nodeagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
)

// Record is what the device keeps of one workload across restarts.
type Record struct {
	Workload bridge.Workload `json:"workload"`
	// Accepted is when the device first saw the workload: the pod's startTime.
	Accepted time.Time `json:"accepted"`
	// Published is when NATS stored the workload the device first saw
	// (NATS's clock): an index of the provider stored before it does not
	// list the pod, and is no reason to remove it. Zero in records of
	// older agents.
	Published time.Time `json:"published,omitzero"`
	// Restarts counts restarts per container name.
	Restarts map[string]int32 `json:"restarts,omitempty"`
	// LastTermination keeps the end of each container's previous run.
	LastTermination map[string]*bridge.Termination `json:"lastTermination,omitempty"`
	// DeadlineExceeded: the pod outlived its activeDeadlineSeconds; its
	// containers stay stopped and it is Failed.
	DeadlineExceeded bool `json:"deadlineExceeded,omitempty"`
}

// Store persists workload records in a directory, one JSON file per pod UID,
// written atomically. The zero value is not usable; call OpenStore.
type Store struct {
	dir string

	mu      sync.Mutex
	records map[string]*Record
}

// OpenStore opens (creating if needed) the store in dir and loads it.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating store directory: %w", err)
	}
	s := &Store{dir: dir, records: map[string]*Record{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading store directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		var r Record
		if err := json.Unmarshal(data, &r); err != nil || r.Workload.UID == "" {
			// A torn or foreign file must not stop the device from running
			// everything else; move it aside.
			_ = os.Rename(filepath.Join(dir, name), filepath.Join(dir, name+".corrupt"))
			continue
		}
		s.records[r.Workload.UID] = &r
	}
	return s, nil
}

// Get returns a copy of the record of uid.
func (s *Store) Get(uid string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[uid]
	if !ok {
		return Record{}, false
	}
	return r.clone(), true
}

// List returns copies of every record, ordered by UID.
func (s *Store) List() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, 0, len(s.records))
	for _, r := range s.records {
		out = append(out, r.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Workload.UID < out[j].Workload.UID })
	return out
}

// UIDs returns the set of stored pod UIDs.
func (s *Store) UIDs() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]bool, len(s.records))
	for uid := range s.records {
		out[uid] = true
	}
	return out
}

// PutWorkload stores w, keeping the record's restart history. It reports
// whether anything changed.
func (s *Store) PutWorkload(w bridge.Workload, now, published time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[w.UID]
	if ok && sameWorkload(&r.Workload, &w) {
		return false, nil
	}
	nr := &Record{Workload: w, Accepted: now, Published: published}
	if ok {
		c := r.clone()
		nr = &c
		nr.Workload = w
		if nr.Published.IsZero() {
			nr.Published = published
		}
	}
	if err := s.write(nr); err != nil {
		return false, err
	}
	s.records[w.UID] = nr
	return true, nil
}

// Update applies fn to the record of uid and persists it.
func (s *Store) Update(uid string, fn func(*Record)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[uid]
	if !ok {
		return nil
	}
	c := r.clone()
	fn(&c)
	if err := s.write(&c); err != nil {
		return err
	}
	s.records[uid] = &c
	return nil
}

// Delete removes the record of uid.
func (s *Store) Delete(uid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.records[uid]; !ok {
		return nil
	}
	if err := os.Remove(s.path(uid)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing record of pod %s: %w", uid, err)
	}
	delete(s.records, uid)
	return nil
}

func (s *Store) path(uid string) string {
	return filepath.Join(s.dir, uid+".json")
}

func (s *Store) write(r *Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding record of pod %s: %w", r.Workload.UID, err)
	}
	if err := writeFileAtomic(s.path(r.Workload.UID), data); err != nil {
		return fmt.Errorf("writing record of pod %s: %w", r.Workload.UID, err)
	}
	return nil
}

// writeFileAtomic writes data to path (mode 0600) through a synced
// temporary file in the same directory and a rename: a crash leaves the old
// file or the new one, never a torn one.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

func (r *Record) clone() Record {
	c := *r
	// A deep copy: unmarshal into a zero Workload, never into the shallow
	// copy's slices, which the original shares.
	c.Workload = bridge.Workload{}
	data, _ := json.Marshal(r.Workload)
	_ = json.Unmarshal(data, &c.Workload)
	c.Restarts = make(map[string]int32, len(r.Restarts))
	for k, v := range r.Restarts {
		c.Restarts[k] = v
	}
	c.LastTermination = make(map[string]*bridge.Termination, len(r.LastTermination))
	for k, v := range r.LastTermination {
		t := *v
		c.LastTermination[k] = &t
	}
	return c
}

// sameWorkload reports whether a and b encode alike.
func sameWorkload(a, b *bridge.Workload) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
