package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The quickstart runs on throwaway servers, and its summary shows every
// protection doing its job.
func TestQuickstart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, "", ""), out.String())
	text := out.String()
	for _, want := range []string{
		`read-through\s+first read from MariaDB \(.*\), second from the cache`,
		`plain-SQL UPDATE\s+invalidated .* after COMMIT returned; next read "Ada Lovelace" from MariaDB`,
		`slow reader's stale fill\s+1 refused \(it read "Bob"\); next read "Bob Moog" from MariaDB`,
		`Redis killed\s+50 of 50 reads answered from MariaDB, slowest .*; breaker open: true`,
	} {
		assert.Regexp(t, want, text)
	}
	// One load serves the stampede. A caller whose Redis request outlives
	// RedisTimeout (a CPU starved by the race detector or a busy machine
	// delays goroutines by as much) takes Redis for failing and loads on its
	// own, by design; the cache package's stampede tests pin "exactly one"
	// where the machine's load is not in play.
	m := regexp.MustCompile(`stampede \(1,000 goroutines\)\s+(\d+) load\(s\) from MariaDB`).FindStringSubmatch(text)
	require.NotNil(t, m, text)
	loads, _ := strconv.Atoi(m[1])
	assert.GreaterOrEqual(t, loads, 1)
	assert.LessOrEqual(t, loads, 10, "at most 1% of the callers reach MariaDB")

	// The filter's false-positive rate is 1% at capacity; with three users
	// in a filter sized for 100,000, a false positive is all but impossible.
	m = regexp.MustCompile(`penetration \(1,000 absent ids\)\s+(\d+) load\(s\) from MariaDB`).FindStringSubmatch(text)
	require.NotNil(t, m, text)
	loads, _ = strconv.Atoi(m[1])
	assert.LessOrEqual(t, loads, 10)
}
