package main

import (
	"fmt"
	"math/rand/v2"
)

// The demo's persistent types. They hold every kind of pointer the pool
// rewrites when it is relocated: object pointers (Best, Addr), slices of
// pointers (Friends, People), strings (Name, Street) and arrays of
// pointers (Index). Friends and Best make cycles; addresses are shared.

// Person is one node of the demo's graph.
type Person struct {
	ID      uint64
	Name    string
	Friends []*Person
	Best    *Person
	Addr    *Address
	Scores  [4]uint32
}

// Address is shared by several people.
type Address struct {
	Street string
	Zip    uint32
}

// Registry is the pool's root.
type Registry struct {
	People []*Person
	Count  int
	Index  [16]*Person
}

// demoObjectTypes are the types the demo allocates as objects; the other
// types in the pool's statistics are element types of arrays.
var demoObjectTypes = map[string]bool{"Person": true, "Address": true, "Registry": true}

// The plan is what the pool must hold, as indices rather than pointers. It
// is a pure function of the number of people, so that the process that
// checks the pool computes the same plan as the one that built it.
type demoPlan struct {
	people []personPlan
	addrs  []addressPlan
	// index[i] is the person Registry.Index[i] points to.
	index [16]int
}

type personPlan struct {
	name    string
	friends []int // indices into people; may include the person itself
	best    int
	addr    int // index into addrs, or -1 for none
	scores  [4]uint32
}

type addressPlan struct {
	street string
	zip    uint32
}

var (
	firstNames = []string{"Ada", "Barbara", "Edsger", "Grace", "Ken", "Leslie", "Niklaus", "Rob", "Tony", "Frances"}
	streets    = []string{"Main", "Elm", "Oak", "Pine", "Cedar", "Maple", "Lake", "Hill"}
)

// newDemoPlan returns the plan for n people (n > 0): n/4+1 addresses, each
// person with up to four friends and a best friend. Person a lives at
// address a, for every address, so that each is reachable; the others
// mostly share a random one.
func newDemoPlan(n int) *demoPlan {
	rng := rand.New(rand.NewPCG(uint64(n), 0x706d656d676f)) // "pmemgo"
	p := &demoPlan{people: make([]personPlan, n), addrs: make([]addressPlan, n/4+1)}
	for i := range p.addrs {
		p.addrs[i] = addressPlan{
			street: fmt.Sprintf("%d %s St", 1+rng.IntN(999), streets[rng.IntN(len(streets))]),
			zip:    10000 + rng.Uint32N(90000),
		}
	}
	for i := range p.people {
		pp := &p.people[i]
		pp.name = fmt.Sprintf("%s #%d", firstNames[rng.IntN(len(firstNames))], i)
		pp.friends = make([]int, rng.IntN(5))
		for k := range pp.friends {
			pp.friends[k] = rng.IntN(n)
		}
		pp.best = rng.IntN(n)
		switch {
		case i < len(p.addrs):
			pp.addr = i
		case rng.IntN(8) == 0:
			pp.addr = -1
		default:
			pp.addr = rng.IntN(len(p.addrs))
		}
		for k := range pp.scores {
			pp.scores[k] = rng.Uint32()
		}
	}
	for i := range p.index {
		p.index[i] = i * n / len(p.index)
	}
	return p
}

// id is the ID person i must hold.
func (p *demoPlan) id(i int) uint64 { return uint64(i) + 1 }
