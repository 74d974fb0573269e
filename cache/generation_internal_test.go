package cache

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// BenchmarkNewNamespace looks up namespaces that are each new, a million
// distinct ones in all (keys without a ':' are each their own namespace
// by default): a new namespace must cost O(1), whatever the table holds.
func BenchmarkNewNamespace(b *testing.B) {
	const distinct = 1_000_000
	names := make([]string, distinct)
	for i := range names {
		names[i] = "ns" + strconv.Itoa(i)
	}
	gs := newGenerations("p:", time.Second)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == distinct {
			i = 0
			gs = newGenerations("p:", time.Second) // every name new again
		}
		gs.of(names[i])
		i++
	}
}

// A namespace keeps its generation while the table has room, and a table
// that fills up starts over.
func TestNamespaceTable(t *testing.T) {
	gs := newGenerations("p:", time.Second)
	g := gs.of("user")
	g.raise(7)
	assert.Same(t, g, gs.of("user"))
	for i := range maxNamespaces {
		gs.of("n" + strconv.Itoa(i))
	}
	assert.NotSame(t, g, gs.of("user"), "the full table started over")
	assert.Equal(t, "p:gen:user", gs.of("user").key)
}
