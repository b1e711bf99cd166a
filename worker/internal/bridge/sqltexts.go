package bridge

import (
	"sync"
	"unsafe"
)

// maxSQLTexts bounds how many SQL texts one Go runtime hands the shim to keep. The store's statements
// are a few dozen constants and a few texts built the same way on every call; a program that builds a
// new text for every call fills the table once, and its later texts cross in full as before.
const maxSQLTexts = 512

// sqlTexts numbers the SQL texts that a Go runtime has handed the shim, so that a statement crosses
// into JavaScript as a small number instead of its text (often kilobytes): the text is escaped, encoded
// and decoded, and parsed by the shim once per runtime instead of on every call.
//
// The invariant: id(q) returns an id only for a text that register accepted under that id, and an id
// always stands for the same text (ids are never reused, texts are never forgotten). A text is found by
// its content, and first by the address of its bytes: the table keeps the first string it saw with
// that content, so its bytes stay alive and unchanged (Go strings are immutable), and another string
// at the same address with the same length holds the same text. Constants hit that fast path.
type sqlTexts struct {
	mu       sync.Mutex
	byText   map[string]int
	byAddr   map[*byte]sqlAddr
	register func(id int, text string) bool // hands text to the shim as id; false if it cannot
}

// sqlAddr is what the fast path knows about the bytes at one address.
type sqlAddr struct {
	n  int // the length of the text registered from there
	id int
}

// id returns the id of q, registering it first if it is new and the table has room; ok is false when
// q must cross as text. A nil *sqlTexts has no ids.
func (t *sqlTexts) id(q string) (id int, ok bool) {
	if t == nil || q == "" {
		return 0, false
	}
	addr := unsafe.StringData(q)
	t.mu.Lock()
	defer t.mu.Unlock()
	if a, hit := t.byAddr[addr]; hit && a.n == len(q) {
		return a.id, true
	}
	if id, hit := t.byText[q]; hit {
		return id, true
	}
	if len(t.byText) >= maxSQLTexts || t.register == nil {
		return 0, false
	}
	if t.byText == nil {
		t.byText, t.byAddr = map[string]int{}, map[*byte]sqlAddr{}
	}
	id = len(t.byText) + 1
	if !t.register(id, q) {
		return 0, false
	}
	t.byText[q] = id
	t.byAddr[addr] = sqlAddr{n: len(q), id: id}
	return id, true
}
