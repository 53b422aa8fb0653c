package store

import "math"

// hlc is a hybrid logical clock: the largest (wall, logical) pair issued or
// observed. It never goes backwards, whatever the wall clock does.
type hlc struct {
	wall    int64
	logical uint32
}

// tick returns a timestamp greater than every one issued or observed so
// far: the physical time when that is ahead, else the last wall with the
// logical counter bumped.
func (c *hlc) tick(now int64) (int64, uint32) {
	switch {
	case now > c.wall:
		c.wall, c.logical = now, 0
	case c.logical == math.MaxUint32:
		c.wall, c.logical = c.wall+1, 0
	default:
		c.logical++
	}
	return c.wall, c.logical
}

// observe moves the clock up to v so the next tick is newer than v.
func (c *hlc) observe(v Version) {
	if v.Wall > c.wall || (v.Wall == c.wall && v.Logical > c.logical) {
		c.wall, c.logical = v.Wall, v.Logical
	}
}
